"""``emodet export | predict``: ONNX files and what runs them (torch-free)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from ..core.errors import UsageError
from ..core.files import expand_inputs
from .common import EXIT_FAILED, EXIT_OK, examples, positive_float


# -- emodet export ---------------------------------------------------------------------------
def add_export(sub) -> None:
    p = sub.add_parser(
        "export", help="export a run or ensemble directory to ONNX",
        description="Write an ONNX model with its labels, features and normalisation as metadata, checked against "
                    "PyTorch in ONNX Runtime on real recordings (refused above 1e-3).",
        epilog=examples("emodet export runs/cnn_v1 --out cnn.onnx --with-features --quantize int8",
                        "emodet export runs/linear_compare --out lin.onnx      # functionals: no front end in the graph"))
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (emodet train) or an ensemble directory")
    p.add_argument("--out", required=True, metavar="FILE.onnx", help="ONNX file to write")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset version (default: 18)")
    p.add_argument("--with-features", action="store_true",
                   help="put the feature front end inside the graph (log-mel, MFCC, or a pretrained encoder; "
                        "encoder models always have it): the model takes raw 16 kHz samples")
    p.add_argument("--quantize", choices=("int8",), help="also write an int8 model (<out>.int8.onnx)")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    from ..export.onnx import export_run

    report = export_run(args.run_dir, args.out, args.opset, args.with_features, args.quantize)
    print(f"exported {args.run_dir} -> {report['path']} ({report['bytes'] / 1e6:.2f} MB; inputs: "
          f"{', '.join(report['inputs'])}); largest |ONNX Runtime - PyTorch| logit difference on real inputs: "
          f"{report['max_abs_diff']:.2e}")
    if "int8_path" in report:
        print(f"int8 -> {report['int8_path']} ({report['int8_bytes'] / 1e6:.2f} MB, "
              f"{report['int8_bytes'] / report['bytes']:.0%} of fp32); top label agrees with fp32 on "
              f"{report['int8_agreement']:.0%} of {report['int8_checked']} check inputs (a near tie flips; "
              "python bench/edge.py --cv-dir compares on every held-out recording)")
    return EXIT_OK


# -- emodet predict --------------------------------------------------------------------------
def add_predict(sub) -> None:
    p = sub.add_parser(
        "predict", help="predict emotions of audio files with an exported model (no torch)",
        description="Predict with an exported model: files, folders (every audio file under them) or - (audio on "
                    "standard input). Models normalised per speaker need --calibrate, per corpus --adapt; "
                    "globally normalised models take any single recording as it is.",
        epilog=examples("emodet predict model.onnx clip.wav my_corpus/happy/",
                        "emodet predict model.onnx meeting.wav --window 2 --hop 0.5",
                        "emodet predict model.onnx a.wav --calibrate speaker_clips/     # per-speaker models",
                        "emodet predict cnn.onnx a.wav --fuse lin.onnx --weights 1 1 --json",
                        "ffmpeg -i talk.m4a -f wav - | emodet predict model.onnx -",
                        "emodet predict model.onnx --mic [--device 2]     # live, a line a hop; Ctrl-C ends"))
    p.add_argument("model", metavar="MODEL.onnx", help="a model written by emodet export")
    files = p.add_argument("files", nargs="+", metavar="FILE", help="audio files, folders (searched recursively) or -")
    files.required = False  # none with --mic; nargs="*" would take FILE... as empty before `--calibrate a.wav b.wav`
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="JSON output")
    fmt.add_argument("--csv", action="store_true", help="CSV output")
    p.add_argument("--window", type=positive_float, metavar="SECONDS", help="window length for long recordings")
    p.add_argument("--hop", type=positive_float, metavar="SECONDS",
                   help="hop between windows (default: half the window; with --mic 0.5)")
    add_model_args(p)
    p.add_argument("--min-confidence", type=float, default=0.0, metavar="P",
                   help="answer 'uncertain' when the top probability is below P (abstain; default: 0, always answer)")
    p.add_argument("--mic", action="store_true",
                   help="listen to the microphone instead of files: a line every hop (--window 2 --hop 0.5 by "
                        "default), a summary at Ctrl-C (needs pip install 'emodet[mic]')")
    p.add_argument("--device", metavar="N", help="with --mic: the input device (a number or part of its name)")
    p.set_defaults(func=cmd_predict)


def add_model_args(p) -> None:
    """--calibrate, --adapt, --fuse, --weights: what makes a predictor of MODEL (predict and serve share them)."""
    p.add_argument("--calibrate", action="append", default=[], metavar="PATH",
                   help="recordings of the speaker for per-speaker models: a file, a folder or a quoted glob "
                        "('clips/*.wav'); repeatable")
    p.add_argument("--adapt", action="append", default=[], metavar="PATH",
                   help="unlabelled recordings of your domain for per-corpus models: a folder, file or quoted glob; "
                        "repeatable")
    p.add_argument("--fuse", action="append", default=[], metavar="MODEL.onnx",
                   help="another exported model to fuse with MODEL (mean of probabilities; repeat for more); "
                        "models may use different features but must share the labels")
    p.add_argument("--weights", nargs="+", type=float, metavar="W", help="fusion weights, one a model")


def build_predictor(args):
    """The predictor MODEL, --fuse, --weights, --calibrate and --adapt describe."""
    from ..runtime.service import open_predictor

    if args.weights and not args.fuse:
        raise UsageError("--weights go with --fuse (one weight a model, the first model's first)")
    return open_predictor([args.model, *args.fuse], args.weights, expand_inputs(args.calibrate, "--calibrate", False),
                          expand_inputs(args.adapt, "--adapt", False))


def cmd_predict(args) -> int:
    from ..core.errors import AudioError
    from ..runtime.service import prediction_record

    if not 0 <= args.min_confidence < 1:
        raise UsageError(f"--min-confidence is a probability in [0, 1), got {args.min_confidence}")

    if args.hop is not None and args.window is None and not args.mic:
        raise UsageError("--hop goes with --window (seconds), e.g. --window 2 --hop 1")
    if args.mic:
        from .listen import predict_live

        return predict_live(args, build_predictor)
    if not args.files:
        raise UsageError("emodet predict needs FILE... (audio files, folders or -), or --mic for the microphone")
    if args.device is not None:
        raise UsageError("--device goes with --mic (the input device to listen to)")
    files = expand_inputs(args.files)
    predictor = build_predictor(args)
    hop = args.hop or (args.window / 2 if args.window else None)
    results, failed = [], 0
    for path in files:
        try:
            results.append(prediction_record(predictor, path, path, args.window, hop, args.min_confidence))
        except AudioError as exc:
            failed += 1
            results.append({"file": path, "error": str(exc)})
            print(f"emodet: error: {exc}", file=sys.stderr)
    (_print_json if args.json else _print_csv if args.csv else _print_text)(results, predictor.labels)
    return EXIT_FAILED if failed else EXIT_OK


def _print_json(results: list[dict], labels: list[str]) -> None:
    print(json.dumps(results, indent=2))


def _print_csv(results: list[dict], labels: list[str]) -> None:
    writer = csv.writer(sys.stdout)
    windowed = any("windows" in r for r in results)
    writer.writerow(["file", *(["start", "end"] if windowed else []), "label", *labels])
    for r in results:
        for w in r.get("windows", [r] if "label" in r else []):
            times = [w["start"], w["end"]] if windowed else []
            writer.writerow([r["file"], *times, w["label"], *(f"{w['probabilities'][lab]:.4f}" for lab in labels)])


def _print_text(results: list[dict], labels: list[str]) -> None:
    for r in results:
        if "segments" in r:
            print(f"{r['file']}:")
            for seg in r["segments"]:
                print(f"  {seg['start']:8.2f} - {seg['end']:8.2f} s  {seg['label']:<10} ({seg['confidence']:.2f})")
        elif "label" in r:
            top = sorted(r["probabilities"].items(), key=lambda kv: -kv[1])
            print(f"{r['file']}: {r['label']}  (" + ", ".join(f"{k} {v:.2f}" for k, v in top[:3]) + ")")
