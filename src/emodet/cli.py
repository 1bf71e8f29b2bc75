"""The ``emodet`` command line: parse arguments, call the library, turn errors into exit codes.

Exit codes: 0 success; 1 the job failed or finished with some inputs failed (each listed in
its report); 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

from . import __version__
from .errors import EmodetError, UsageError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse with our exit code for usage errors (argparse's own is also 2)."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def parse_params(items: list[str] | None, flag: str = "--param") -> dict:
    """``["n_mels=64", "fmax=8000"]`` -> ``{"n_mels": 64, "fmax": 8000}`` (values read as YAML scalars)."""
    params = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} {item!r}: expected key=value, e.g. {flag} n_mels=64")
        try:
            params[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            params[key.strip()] = value
    return params


# -- emodet features -------------------------------------------------------------------------
def _add_features_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", help="folder of audio files (searched recursively)")
    p.add_argument("--feature", default="logmel", help="registered feature name (default: logmel); --list shows them")
    p.add_argument("--cache-dir", help="folder of the feature cache")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="feature parameter (librosa's names), repeatable")
    p.add_argument("--sr", type=int, default=16000, help="sample rate audio is resampled to (default: 16000)")
    p.add_argument("--workers", type=int, default=1, help="processes computing features (default: 1)")
    p.add_argument("--on-error", choices=("skip", "raise"), default="skip",
                   help="skip bad files and report them (default) or stop at the first")
    p.add_argument("--shard", metavar="I/N", help="build only shard I of N (0-based), e.g. for several machines")
    p.add_argument("--speed", action="append", type=float, default=[], metavar="FACTOR",
                   help="also build the features of every file speed-perturbed by FACTOR (repeatable), as training with "
                        "training.augment.speed reads them, e.g. --speed 0.9 --speed 1.1")
    p.add_argument("--plugin", action="append", metavar="MODULE_OR_FILE", help="import a module that registers features")
    p.add_argument("--list", action="store_true", help="list the registered features and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_features(args) -> int:
    from .config import check_speed_factors
    from .data.cache import FeatureCache
    from .features import get_feature_spec, list_features, load_plugins

    load_plugins(args.plugin)
    if args.list:
        for name in list_features():
            spec = get_feature_spec(name)
            alias = f" (alias: {', '.join(spec.aliases)})" if spec.aliases else ""
            params = ", ".join(f"{k}={json.dumps(v)}" for k, v in (spec.defaults or {}).items())
            print(f"{name:10s} {spec.description}{alias}" + (f"\n{'':10s} parameters: {params}" if params else ""))
        return EXIT_OK
    missing = [flag for flag, value in (("--data-root", args.data_root), ("--cache-dir", args.cache_dir)) if not value]
    if missing:
        raise UsageError(f"emodet features needs {' and '.join(missing)}")
    check_speed_factors(args.speed, "--speed")
    status = EXIT_OK
    for speed in [None, *args.speed]:  # the recordings as they are, then each perturbed copy
        cache = FeatureCache(args.cache_dir, args.feature, parse_params(args.param), sr=args.sr, speed=speed)
        report = cache.build(args.data_root, workers=args.workers, on_error=args.on_error, shard=args.shard,
                             progress=False if args.no_progress else None, plugins=args.plugin or ())
        print(report.summary_line() + (f" (speed {speed:g})" if speed else ""))
        if report.failed:
            for item in report.failed[:10]:
                print(f"  failed: {item['error']}", file=sys.stderr)
            more = f" ({len(report.failed) - 10} more)" if len(report.failed) > 10 else ""
            name = "report.json" if report.shard is None else f"report-shard-{report.shard.replace('/', '-of-')}.json"
            print(f"  {len(report.failed)} file(s) failed{more}; all listed in {Path(report.cache_dir) / name}",
                  file=sys.stderr)
            status = EXIT_FAILED
    return status


# -- emodet data synth -----------------------------------------------------------------------
def cmd_data_synth(args) -> int:
    from .data.synth import generate_corpus

    start = time.perf_counter()
    rows = generate_corpus(args.out, per_class=args.per_class, speakers=args.speakers, seed=args.seed)
    seconds = sum(r["duration_s"] for r in rows)
    labels = sorted({r["label"] for r in rows})
    print(f"synthetic corpus: {len(rows)} files, {args.speakers} speakers, {len(labels)} labels "
          f"({', '.join(labels)}), {seconds / 60:.1f} min of audio in {time.perf_counter() - start:.1f} s -> {args.out}")
    return EXIT_OK


# -- emodet data prepare / split -------------------------------------------------------------
def _add_split_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--val", type=_fraction_or_count, default=0.1,
                   help="validation speakers: a fraction below 1 or a count (default: 0.1)")
    p.add_argument("--test", type=_fraction_or_count, default=0.2,
                   help="test speakers: a fraction below 1 or a count (default: 0.2)")
    p.add_argument("--folds", type=int, default=5, help="k for the 'fold' column of k folds by speaker (default: 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default: 0)")


def _fraction_or_count(text: str) -> float | int:
    value = float(text)
    return int(value) if value >= 1 and value == int(value) else value


def cmd_data_prepare(args) -> int:
    from .data.corpora import prepare_corpus
    from .data.labels import load_label_map, parse_label_list
    from .data.manifest import write_manifest
    from .data.splits import assign_splits, split_summary
    from .io import atomic_write_csv

    columns = parse_params(args.column, "--column")
    result = prepare_corpus(args.corpus, args.root, load_label_map(args.label_map), parse_label_list(args.labels),
                            args.speaker_pattern, {k: str(v) for k, v in columns.items()})
    if not result.rows:
        raise UsageError(f"--root {args.root}: no file parsed as corpus {result.corpus!r} "
                         f"({len(result.failed)} failed, e.g. {result.failed[0]['path']}: {result.failed[0]['reason']})"
                         if result.failed else f"--root {args.root}: no file left after --labels/--label-map")
    assign_splits(result.rows, args.val, args.test, args.folds, args.seed)
    out = Path(args.out)
    write_manifest(out, result.rows)
    unparsed = out.with_name(out.stem + ".unparsed.csv")
    if result.failed:
        atomic_write_csv(unparsed, result.failed, ["path", "reason"])
    elif unparsed.exists():
        unparsed.unlink()
    n_spk = len({r["speaker"] for r in result.rows})
    print(f"{result.corpus}: {len(result.rows)} files, {n_spk} speakers -> {out} (paths relative to {result.root})")
    print(split_summary(result.rows))
    notes = []
    if result.dropped:
        notes.append(f"{result.dropped} dropped by --label-map")
    if result.excluded:
        notes.append(f"{result.excluded} with labels outside --labels")
    if notes:
        print("  left out on purpose: " + ", ".join(notes))
    if result.failed:
        for item in result.failed[:10]:
            print(f"  not parsed: {item['path']}: {item['reason']}", file=sys.stderr)
        more = f", {len(result.failed) - 10} more" if len(result.failed) > 10 else ""
        print(f"  {len(result.failed)} file(s) not in the manifest{more}; all listed in {unparsed}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_data_split(args) -> int:
    from .data.manifest import write_manifest
    from .data.splits import assign_splits, split_summary

    rows = [{**r, "split": ""} for r in _read_manifest_unsplit(args.manifest)]
    assign_splits(rows, args.val, args.test, args.folds, args.seed)
    out = args.out or args.manifest
    write_manifest(out, rows)
    print(f"split {len(rows)} files by speaker (seed {args.seed}) -> {out}")
    print(split_summary(rows))
    return EXIT_OK


def _read_manifest_unsplit(path):
    """Read a manifest for re-splitting: its old split column may be anything."""
    import csv

    from .data.manifest import read_manifest

    try:
        return read_manifest(path)
    except UsageError as exc:
        if "is in both" not in str(exc):
            raise
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))


# -- emodet train ----------------------------------------------------------------------------
def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="experiment YAML (see configs/)")
    p.add_argument("--run-name", required=True, help="name of the run directory under --runs-dir")
    p.add_argument("--data-root", help="corpus folder (sets data.root)")
    p.add_argument("--set", action="append", metavar="KEY.SUB=VALUE", dest="overrides",
                   help="override one config key, e.g. --set training.epochs=3 (repeatable)")
    p.add_argument("--runs-dir", default="runs", help="folder of run directories (default: runs)")
    p.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    p.add_argument("--teacher", help="run or ensemble directory to distil from (sets training.distill.teacher)")
    p.add_argument("--distill-weight", type=float, help="weight of the distillation loss (sets training.distill.weight)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _config_from_args(args) -> dict:
    from .config import load_config

    overrides = list(args.overrides or [])
    if getattr(args, "teacher", None):
        overrides.append(f"training.distill.teacher={args.teacher}")
    if getattr(args, "distill_weight", None) is not None:
        overrides.append(f"training.distill.weight={args.distill_weight}")
    return load_config(args.config, overrides, args.data_root)


def cmd_train(args) -> int:
    from .distributed import maybe_init_distributed
    from .experiment import run_experiment

    cfg = _config_from_args(args)
    dist = maybe_init_distributed(cfg)
    try:
        metrics = run_experiment(cfg, args.run_name, args.runs_dir, resume=args.resume,
                                 progress=False if args.no_progress else None, distributed=dist)
    finally:
        if dist is not None:
            dist.close()
    if metrics:
        split = "test" if "test" in metrics else "val"
        print(f"{args.run_name}: {split} UAR {metrics[split]['uar']:.3f}  WA {metrics[split]['wa']:.3f}  "
              f"macro-F1 {metrics[split]['macro_f1']:.3f}  (best epoch {metrics['best_epoch']}, "
              f"speakers held out: {', '.join(metrics[split]['speakers'])}) -> {Path(args.runs_dir) / args.run_name}")
        return EXIT_FAILED if metrics.get("skipped_files") else EXIT_OK
    return EXIT_OK


# -- emodet evaluate / cv / ensemble -------------------------------------------------------------
def cmd_evaluate(args) -> int:
    from .evaluation.evaluate import evaluate_directory

    m = evaluate_directory(args.run_dir, args.manifest, args.split, args.data_root)
    print(f"{args.run_dir} on {args.split} ({m['n']} recordings, speakers {', '.join(m['speakers'])}): "
          f"UAR {m['uar']:.3f}  WA {m['wa']:.3f}  macro-F1 {m['macro_f1']:.3f}")
    for lab, pc in m["per_class"].items():
        print(f"  {lab:<10} precision {pc['precision']:.3f}  recall {pc['recall']:.3f}  F1 {pc['f1']:.3f}  "
              f"n {pc['support']}")
    print(f"  -> {Path(args.run_dir) / ('eval_' + args.split + '.json')}")
    return EXIT_OK


def cmd_cv(args) -> int:
    from .cv import run_cv

    cfg = _config_from_args(args)
    summary = run_cv(cfg, args.folds, args.run_name, args.runs_dir, progress=False if args.no_progress else None)
    pooled = summary["pooled"]
    print(f"{args.run_name}: {summary['n_folds']} folds ({args.folds}); UAR {summary['uar_mean']:.3f} +- "
          f"{summary['uar_std']:.3f} over folds; pooled UAR {pooled['uar']:.3f}  WA {pooled['wa']:.3f}  "
          f"macro-F1 {pooled['macro_f1']:.3f} -> {Path(args.runs_dir) / args.run_name / 'cv_summary.json'}")
    return EXIT_OK


def cmd_ensemble(args) -> int:
    from .ensemble import create_ensemble

    weights = [float(w) for w in args.weights.split(",")] if args.weights else None
    spec = create_ensemble(args.runs, args.out, weights, args.combine)
    print(f"ensemble of {len(spec['runs'])} runs ({args.combine} averaging, weights {spec['weights']}) -> "
          f"{Path(args.out) / 'ensemble.json'}")
    if args.evaluate:
        from .evaluation.evaluate import evaluate_directory

        m = evaluate_directory(args.out, None, "test", refuse_seen_speakers=True)
        print(f"ensemble on test ({m['n']} recordings): UAR {m['uar']:.3f}  WA {m['wa']:.3f}  "
              f"macro-F1 {m['macro_f1']:.3f}")
    return EXIT_OK


# -- emodet export / predict ------------------------------------------------------------------
def cmd_export(args) -> int:
    from .export.onnx import export_run

    report = export_run(args.run_dir, args.out, args.opset, args.with_features, args.quantize)
    inputs = ", ".join(report["inputs"])
    print(f"exported {args.run_dir} -> {report['path']} ({report['bytes'] / 1e6:.2f} MB; inputs: {inputs}); "
          f"largest |ONNX Runtime - PyTorch| logit difference on real inputs: {report['max_abs_diff']:.2e}")
    if "int8_path" in report:
        print(f"int8 -> {report['int8_path']} ({report['int8_bytes'] / 1e6:.2f} MB, "
              f"{report['int8_bytes'] / report['bytes']:.0%} of fp32); top label agrees with fp32 on "
              f"{report['int8_agreement']:.0%} of the check inputs")
    return EXIT_OK


def cmd_predict(args) -> int:
    import csv
    import json

    from .errors import AudioError
    from .runtime import EmotionPredictor, FusedPredictor, smooth_segments

    if (args.window is None) != (args.hop is None):
        raise UsageError("--window and --hop go together (seconds), e.g. --window 2 --hop 1")
    if args.weights and not args.fuse:
        raise UsageError("--weights go with --fuse (one weight a model, the first model's first)")
    predictor = FusedPredictor([args.model, *args.fuse], args.weights) if args.fuse else EmotionPredictor(args.model)
    if args.calibrate:
        predictor.calibrate(args.calibrate)
    elif predictor.needs_calibration:
        raise UsageError("a model normalises openSMILE functionals per speaker: give a few recordings of the "
                         "speaker with --calibrate FILE... (one recording's functionals have no spread)")
    results, failed = [], 0
    for path in args.files:
        try:
            if args.window is not None:
                windows = predictor.predict_windows(path, args.window, args.hop)
                results.append({"file": path, "windows": windows, "segments": smooth_segments(windows)})
            else:
                probs = predictor.predict(path)
                results.append({"file": path, "label": max(probs, key=probs.get), "probabilities": probs})
        except (AudioError, UsageError) as exc:
            failed += 1
            results.append({"file": path, "error": str(exc)})
            print(f"emodet: error: {exc}", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
    elif args.csv:
        writer = csv.writer(sys.stdout)
        labels = predictor.labels
        if args.window is not None:
            writer.writerow(["file", "start", "end", "label", *labels])
            for r in results:
                for w in r.get("windows", []):
                    writer.writerow([r["file"], w["start"], w["end"], w["label"],
                                     *(f"{w['probabilities'][lab]:.4f}" for lab in labels)])
        else:
            writer.writerow(["file", "label", *labels])
            for r in results:
                if "error" not in r:
                    writer.writerow([r["file"], r["label"], *(f"{r['probabilities'][lab]:.4f}" for lab in labels)])
    else:
        for r in results:
            if "error" in r:
                continue
            if "segments" in r:
                print(f"{r['file']}:")
                for seg in r["segments"]:
                    print(f"  {seg['start']:8.2f} - {seg['end']:8.2f} s  {seg['label']:<10} ({seg['confidence']:.2f})")
            else:
                top = sorted(r["probabilities"].items(), key=lambda kv: -kv[1])
                print(f"{r['file']}: {r['label']}  (" + ", ".join(f"{k} {v:.2f}" for k, v in top[:3]) + ")")
    return EXIT_FAILED if failed else EXIT_OK


# -- emodet demo -----------------------------------------------------------------------------
def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args.out, per_class=args.per_class, speakers=args.speakers, seed=args.seed, epochs=args.epochs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="emodet", description="Speech emotion recognition: features, training, evaluation, export.")
    parser.add_argument("--version", action="version", version=f"emodet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("demo", help="the whole path on a built-in synthetic corpus (no download)")
    p.add_argument("--out", default="emodet-demo", help="folder for corpus, cache and runs (default: ./emodet-demo)")
    p.add_argument("--per-class", type=int, default=12, help="utterances per class and speaker (default: 12)")
    p.add_argument("--speakers", type=int, default=8, help="number of speakers (default: 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, help="epochs of each demo model (default: the demo's own)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("data", help="corpora: synthesise, prepare manifests")
    data_sub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND", parser_class=_Parser)
    ps = data_sub.add_parser("synth", help="write a synthetic labelled corpus (folder per label)")
    ps.add_argument("--out", required=True, help="output folder")
    ps.add_argument("--per-class", type=int, default=12, help="utterances per class and speaker (default: 12)")
    ps.add_argument("--speakers", type=int, default=8, help="number of speakers (default: 8)")
    ps.add_argument("--seed", type=int, default=0)
    ps.set_defaults(func=cmd_data_synth)

    pp = data_sub.add_parser("prepare", help="parse a corpus into a manifest CSV with speaker-independent splits")
    pp.add_argument("--corpus", required=True, help="emodb, ravdess, crema-d, tess, savee, folder, csv or auto")
    pp.add_argument("--root", required=True, help="corpus folder (for --corpus csv: the CSV file)")
    pp.add_argument("--out", required=True, help="manifest CSV to write")
    pp.add_argument("--labels", help="keep only these canonical labels, e.g. neutral,happy,sad,angry")
    pp.add_argument("--label-map", help="YAML/JSON/CSV mapping of labels to others (empty target drops a label)")
    pp.add_argument("--speaker-pattern", help="--corpus folder: regex giving the speaker from the file name "
                    "(group 'speaker' or the first group; default: the file name up to the first _ or -)")
    pp.add_argument("--column", action="append", metavar="KEY=NAME",
                    help="--corpus csv: the CSV's column for path, label or speaker, e.g. --column path=file")
    _add_split_args(pp)
    pp.set_defaults(func=cmd_data_prepare)

    pl = data_sub.add_parser("split", help="(re)write the speaker-independent split and fold columns of a manifest")
    pl.add_argument("--manifest", required=True)
    pl.add_argument("--out", help="write here instead of replacing --manifest")
    _add_split_args(pl)
    pl.set_defaults(func=cmd_data_split)

    p = sub.add_parser("train", help="train and test one model from an experiment config")
    _add_train_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a run or ensemble directory on a manifest split")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--manifest", help="manifest CSV (default: the run's own manifest.csv)")
    p.add_argument("--split", default="test", choices=("train", "val", "test", "all"))
    p.add_argument("--data-root", help="folder the manifest's paths are relative to (default: the run's data.root)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("cv", help="speaker-independent cross-validation (k folds or leave one speaker out)")
    p.add_argument("--config", required=True)
    p.add_argument("--folds", required=True, help="'loso' or a number of folds by speaker")
    p.add_argument("--run-name", required=True)
    p.add_argument("--data-root")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--set", action="append", metavar="KEY.SUB=VALUE", dest="overrides")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_cv)

    p = sub.add_parser("ensemble", help="combine several runs into one model")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", required=True, help="ensemble directory to write")
    p.add_argument("--weights", help="comma-separated weights, one a run (default: equal)")
    p.add_argument("--combine", choices=("prob", "logit"), default="prob",
                   help="average probabilities (default) or logits")
    p.add_argument("--evaluate", action="store_true", help="evaluate the ensemble on the runs' test split")
    p.set_defaults(func=cmd_ensemble)

    p = sub.add_parser("export", help="export a run or ensemble directory to ONNX")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", required=True, help="ONNX file to write")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--with-features", action="store_true", help="put the MFCC/log-mel front end inside the graph")
    p.add_argument("--quantize", choices=("int8",), help="also write an int8 model (<out>.int8.onnx)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="predict emotions of audio files with an exported model (no torch)")
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("files", nargs="+", metavar="FILE")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="JSON output")
    fmt.add_argument("--csv", action="store_true", help="CSV output")
    p.add_argument("--window", type=float, help="window length in seconds for long recordings")
    p.add_argument("--hop", type=float, help="hop between windows in seconds")
    p.add_argument("--calibrate", nargs="+", metavar="FILE",
                   help="recordings of the speaker, for models trained with per-speaker normalisation "
                        "(without it each file is normalised with its own statistics)")
    p.add_argument("--fuse", action="append", default=[], metavar="MODEL.onnx",
                   help="another exported model to fuse with MODEL (mean of probabilities; repeat for more); "
                        "models may use different features but must share the labels")
    p.add_argument("--weights", nargs="+", type=float, metavar="W", help="fusion weights, one a model")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("features", help="build a feature cache for a folder of audio")
    _add_features_args(p)
    p.set_defaults(func=cmd_features)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        (parser if args.command is None else parser._subparsers._group_actions[0].choices[args.command]).print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except EmodetError as exc:
        print(f"emodet: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("emodet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
