"""Edge deployment figures: latency per 3 s clip on one thread, model sizes, and the UAR cost of int8.

    python bench/edge.py [--cv-dir runs/bench_accuracy/emodb_cnn_logmel]   # the tiny CNN (configs/cnn_logmel.yaml)
    python bench/edge.py --fuse runs/bench_accuracy/emodb_linear_compare     # + the tiny fused model
    python bench/edge.py --search                                             # the edge student's candidates

The tiny fused model (--fuse CV_DIR ...): the CNN late-fused with other LOSO runs (e.g. the
linear model over openSMILE ComParE functionals), deployed as it would be on a device: every
fold's members exported to ONNX (the CNN with its front end in the graph, functionals models
without) and run by the torch-free `FusedPredictor`, calibrated on the held-out speaker's
recordings; pooled UAR of the fused model and of each member, total size, and the latency
per recording read from its file (decoding and openSMILE included) beside the CNN alone.
Target (issue 5): a tiny edge model under 1 MB with UAR >= 0.83.

Latency (p50/p95 over --repeats runs of a 3 s clip, one thread, after warm-up), measured
side by side in this run for: ONNX Runtime fp32 with the log-mel front end in the graph,
ONNX Runtime int8 (dynamic quantisation), and PyTorch eager (the same front end module and
model, `torch.inference_mode`). Per-speaker normalisation statistics are given as calibrated
inputs, as a device would after calibration.

Quantisation cost: every fold of a leave-one-speaker-out run directory (from
bench/accuracy.py) is exported fp32 and int8 and evaluated on its held-out speaker through
the torch-free runtime; the pooled UAR of both is compared.
Targets (issue 6, the tiny CNN): tiny model with features in the graph p50 <= 5 ms; ONNX Runtime >= 1.5x
faster than eager; int8 <= 40% of fp32 size with <= 1 point of UAR lost. Targets (issue 23, the edge
student, configs/edge_student.yaml): < 1 MB fp32 with raw 16 kHz audio in, p50 <= 3 ms, int8 within 1 point
of fp32 (the 40% size line above is the tiny CNN's: the student's int8 file is 40% of its fp32 one, 0.37 /
0.92 MB; the dscnn student's half, 0.114 / 0.228 MB).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from emodet.core.audio import load_audio
from emodet.data.manifest import read_manifest, resolve_path
from emodet.core.errors import EmodetError, UsageError
from emodet.evaluation.metrics import classification_metrics
from emodet.export.onnx import DeployModel, export_run
from emodet.runs import load_run
from emodet.runtime import EmotionPredictor

REPO = Path(__file__).resolve().parents[1]


def percentiles(times: list[float]) -> tuple[float, float]:
    arr = np.array(times) * 1e3
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 95))


def ort_session(path):
    """An ONNX Runtime session on one thread, as the latency figures are measured."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def latency(run_dir: Path, out_dir: Path, repeats: int) -> None:
    from emodet.features import get_feature_spec
    from emodet.runs import load_predictor

    report = export_run(run_dir, out_dir / "m.onnx", with_features=True, quantize="int8")
    info = load_run(run_dir)
    sr = info.sample_rate
    clip = (np.random.default_rng(0).standard_normal(3 * sr) * 0.05).astype(np.float32)
    n_feat = info.input_shape[0]
    feed = {"audio": clip[None], "audio_lengths": np.array([len(clip)], np.int64)}
    if "norm_mean" in report["inputs"]:  # a grouped model's statistics (identity: timing only)
        feed.update({"norm_mean": np.zeros(n_feat, np.float32), "norm_std": np.ones(n_feat, np.float32)})
    if "norm_whiten" in report["inputs"]:
        feed["norm_whiten"] = np.eye(n_feat, dtype=np.float32)
    torch.set_num_threads(1)
    model = load_predictor(run_dir).eval()
    frontend = get_feature_spec(info.feature).module_factory(sr, info.feature_params).eval()  # torch.stft
    from emodet.features.spectral import resolve_frame_params

    hop = resolve_frame_params(sr, info.feature_params)["hop_length"]
    eager = DeployModel(model, frontend, hop, info.normalizer).eval()
    eager_inputs = [torch.from_numpy(feed[k]) for k in report["inputs"]]

    sessions = {"ONNX Runtime fp32": ort_session(report["path"]), "ONNX Runtime int8": ort_session(report["int8_path"])}
    timings = {name: [] for name in [*sessions, "PyTorch eager"]}
    for _ in range(10):  # warm-up
        for s in sessions.values():
            s.run(["logits"], feed)
        with torch.inference_mode():
            eager(*eager_inputs)
    for _ in range(repeats):  # interleaved, so machine noise hits all three alike
        for name, s in sessions.items():
            t = time.perf_counter()
            s.run(["logits"], feed)
            timings[name].append(time.perf_counter() - t)
        t = time.perf_counter()
        with torch.inference_mode():
            eager(*eager_inputs)
        timings["PyTorch eager"].append(time.perf_counter() - t)
    sizes = {"ONNX Runtime fp32": report["bytes"], "ONNX Runtime int8": report["int8_bytes"],
             # what eager holds: the model's and the front end's parameters and buffers (an encoder's weights too)
             "PyTorch eager": sum(t.numel() * t.element_size() for t in (*eager.parameters(), *eager.buffers()))}
    print(f"latency of one 3 s clip, features in the graph, 1 thread, {repeats} runs ({run_dir})")
    print(f"{'engine':<22}{'p50 ms':>9}{'p95 ms':>9}{'size MB':>10}")
    p50 = {}
    for name, times in timings.items():
        a, b = percentiles(times)
        p50[name] = a
        print(f"{name:<22}{a:>9.2f}{b:>9.2f}{sizes[name] / 1e6:>10.3f}")
    print(f"ONNX Runtime fp32 vs eager: {p50['PyTorch eager'] / p50['ONNX Runtime fp32']:.2f}x faster; "
          f"int8 size {sizes['ONNX Runtime int8'] / sizes['ONNX Runtime fp32']:.0%} of fp32")
    return {"p50_fp32": p50["ONNX Runtime fp32"], "p50_int8": p50["ONNX Runtime int8"],
            "mb_fp32": sizes["ONNX Runtime fp32"] / 1e6, "mb_int8": sizes["ONNX Runtime int8"] / 1e6}


def finished_folds(cv_dir: Path) -> list[Path]:
    """The fold folders of a cross-validation directory that finished (have metrics.json), in order."""
    return sorted(p.parent for p in cv_dir.glob("fold_*/metrics.json"))


def quantisation_cost(cv_dir: Path, out_dir: Path) -> None:
    folds = finished_folds(cv_dir)
    if not folds:
        print(f"\nno finished folds in {cv_dir}: run bench/accuracy.py first for the int8 UAR figure")
        return
    preds = {"fp32": [], "int8": []}
    targets = []
    labels = None
    for fold in folds:
        report = export_run(fold, out_dir / f"{fold.name}.onnx", with_features=True, quantize="int8")
        test, files = held_out_rows(fold)
        wavs = [load_audio(f) for f in files]
        for kind, path in (("fp32", report["path"]), ("int8", report["int8_path"])):
            p = EmotionPredictor(path)
            if p.needs == "calibrate":  # per-speaker statistics of the held-out speaker's own recordings, as in training
                p.calibrate(wavs, sr=16000)
            labels = p.labels
            preds[kind] += [int(np.argmax(list(d.values()))) for d in p.predict_batch(wavs, sr=16000)]
        targets += [labels.index(r["label"]) for r in test]
    m = {k: classification_metrics(targets, v, labels) for k, v in preds.items()}
    agree = np.mean(np.array(preds["fp32"]) == np.array(preds["int8"]))
    print(f"\nint8 vs fp32 on the held-out speakers of {cv_dir.name} ({len(folds)} LOSO folds, {len(targets)} recordings, "
          f"torch-free runtime)")
    print(f"fp32 UAR {m['fp32']['uar']:.3f}  WA {m['fp32']['wa']:.3f}")
    print(f"int8 UAR {m['int8']['uar']:.3f}  WA {m['int8']['wa']:.3f}  -> change {100 * (m['int8']['uar'] - m['fp32']['uar']):+.1f} "
          f"points; same top label on {agree:.1%} of recordings")
    return {"uar_fp32": m["fp32"]["uar"], "uar_int8": m["int8"]["uar"]}


def held_out_rows(fold: Path) -> tuple[list[dict], list[str]]:
    """The held-out speaker's manifest rows of a fold and their file paths."""
    rows = [r for r in read_manifest(fold / "manifest.csv") if r["split"] == "test"]
    root = load_run(fold).data_root
    return rows, [str(resolve_path(r["path"], root, fold / "manifest.csv")) for r in rows]


def fused_model(cv_dirs: list[Path], out_dir: Path, repeats: int) -> None:
    from emodet.features import get_feature_spec
    from emodet.runtime import FusedPredictor

    fold_names = [[p.name for p in finished_folds(d)] for d in cv_dirs]
    if not fold_names[0] or any(f != fold_names[0] for f in fold_names):
        print(f"\nfused model: {', '.join(map(str, cv_dirs))} need the same finished folds (run bench/accuracy.py)")
        return
    names = [d.name for d in cv_dirs]
    probs = {n: [] for n in [*names, "fused"]}
    targets, sizes, labels = [], None, None
    for fold in fold_names[0]:
        paths = []
        for d in cv_dirs:
            run = d / fold
            graph = get_feature_spec(load_run(run).feature).exportable
            paths.append(export_run(run, out_dir / f"{d.name}_{fold}.onnx", with_features=graph)["path"])
        sizes = [Path(q).stat().st_size for q in paths]
        rows, files = held_out_rows(cv_dirs[0] / fold)
        fused = FusedPredictor(paths)
        if fused.needs_calibration:  # the held-out speaker's recordings, as per-speaker normalisation in training
            fused.calibrate(files)
        labels = fused.labels
        member_probs = [m.probabilities(files) for m in fused.members]
        for n, pr in zip(names, member_probs):
            probs[n].append(pr)
        probs["fused"].append(fused.combine(member_probs))  # the members' outputs, not computed twice
        targets += [labels.index(r["label"]) for r in rows]
    print(f"\ntiny fused model on held-out speakers ({len(fold_names[0])} LOSO folds, {len(targets)} recordings, "
          "torch-free runtime, each fold's own ONNX files)")
    print(f"{'model':<34}{'UAR':>7}{'WA':>7}{'size MB':>10}")
    for n, size in [*zip(names, sizes), ("fused", sum(sizes))]:
        m = classification_metrics(targets, np.concatenate(probs[n]).argmax(1), labels)
        print(f"{n:<34}{m['uar']:>7.3f}{m['wa']:>7.3f}{size / 1e6:>10.3f}")
    print("target: under 1 MB with UAR >= 0.83 (issue 5)")

    # latency per recording, read from its file (decoding included), the first model alone and the
    # fused model interleaved; openSMILE's ComParE takes far longer than the CNN, so fewer runs
    files = held_out_rows(cv_dirs[0] / fold_names[0][0])[1][: max(5, repeats // 10)]
    seconds = np.mean([sf.info(f).duration for f in files])
    alone = fused.members[0]
    fused.predict(files[0])  # warm-up
    timings = {f"{names[0]} alone": [], "fused model": []}
    for f in files:
        for name, predictor in ((f"{names[0]} alone", alone), ("fused model", fused)):
            t = time.perf_counter()
            predictor.predict(f)
            timings[name].append(time.perf_counter() - t)
    print(f"latency per recording from its file (decoding included; {len(files)} held-out recordings, "
          f"mean {seconds:.2f} s), 1 thread")
    for name, times in timings.items():
        a, b = percentiles(times)
        print(f"{name:<34}p50 {a:8.1f} ms  p95 {b:8.1f} ms")


# The architecture search's candidates, beside the shipped student, the dscnn student and today's tiny CNN: the
# dscnn student's config (configs/edge_dscnn.yaml) with each combination of SEARCH (declared in bench/PROTOCOLS.md
# before they were measured), and the stem student's (configs/edge_student.yaml) with other ranks (timed only,
# added 2026-12-07 after the stem shipped; no rank was chosen by accuracy).
SEARCH = {"n_mels": (32, 40, 64), "hop_ms": (10, 20), "channels": ((32, 64, 96, 128), (16, 32, 48, 64)),
          "stem_stride": (2, 4)}
STEM_RANKS = ((48, 64), (32, 64), (48, 48), (32, 48), (32, 32))
BUDGET_MB, BUDGET_MS = 1.0, 3.0  # issue 23: < 1 MB of ONNX, p50 <= 3 ms a 3 s clip on one thread


def untrained_graph(config: Path, overrides: list[str], path: Path) -> dict:
    """Export the model a config would train (untrained weights: latency and size do not depend on them) with its
    front end in the graph, as `emodet export --with-features` would; ``{path, names, n_feat, params}``."""
    from emodet.config import load_config
    from emodet.data.normalize import GROUPED_MODES
    from emodet.export.graph import export_onnx
    from emodet.export.onnx import graph_front_end, graph_inputs
    from emodet.features import get_feature_spec
    from emodet.features.registry import resolve_params
    from emodet.features.spectral import resolve_frame_params
    from emodet.models import build_model, count_parameters

    cfg = load_config(config, overrides, data_root=".")
    sr, spec = cfg.data.sample_rate, get_feature_spec(cfg.features.type)
    params = resolve_params(cfg.features.type, cfg.features.params)
    frontend = graph_front_end(spec, sr, params)
    with torch.no_grad():  # an encoder takes the samples' lengths and gives the features' back
        out = frontend(torch.zeros(1, sr), torch.tensor([sr])) if spec.graph_only else frontend(torch.zeros(1, sr))
        n_feat = int((out[0] if spec.graph_only else out).shape[1])
    model = build_model(cfg.model.name, 7, (n_feat, 300), cfg.model.preset, **cfg.model.params).eval()
    speaker = cfg.data.normalize in GROUPED_MODES
    normalizer = {"mode": cfg.data.normalize} if speaker else {"mode": "global", "mean": [0.0] * n_feat,
                                                               "std": [1.0] * n_feat}
    hop = 1 if spec.graph_only else resolve_frame_params(sr, params)["hop_length"]
    deploy = DeployModel(model, frontend, hop, normalizer).eval()
    example, names, shapes = graph_inputs(sr, hop, n_feat, True, speaker, getattr(frontend, "max_seconds", None))
    export_onnx(deploy, path, example, names, shapes)
    return {"path": path, "names": names, "n_feat": n_feat, "params": count_parameters(model) + sum(p.numel() for p in frontend.parameters())}


def architecture_search(out_dir: Path, repeats: int) -> None:
    """Size and latency of every candidate in ``SEARCH`` (and the shipped student and tiny CNN), timed interleaved
    in one run; which fit the budget. Accuracy is not measured here: that needs each survivor trained."""
    import itertools

    graphs = {"tiny cnn_logmel (today)": untrained_graph(REPO / "configs" / "cnn_logmel.yaml", [], out_dir / "ref.onnx"),
              "edge_student (shipped, stem 64x96)": untrained_graph(REPO / "configs" / "edge_student.yaml", [],
                                                                     out_dir / "s.onnx"),
              "edge_dscnn (the student before)": untrained_graph(REPO / "configs" / "edge_dscnn.yaml", [],
                                                                  out_dir / "d.onnx")}
    for r1, r2 in STEM_RANKS:
        graphs[f"stem {r1}x{r2}"] = untrained_graph(REPO / "configs" / "edge_student.yaml", [
            f"features.params.model=smart-turn-v3.2-stem-{r1}x{r2}"], out_dir / f"r{r1}x{r2}.onnx")
    for n_mels, hop_ms, channels, stride in itertools.product(*SEARCH.values()):
        name = f"dscnn mel{n_mels} hop{hop_ms}ms ch{channels[-1]} stem/{stride}"
        graphs[name] = untrained_graph(REPO / "configs" / "edge_dscnn.yaml", [
            f"features.params.n_mels={n_mels}", f"features.params.hop_length={16 * hop_ms}",
            f"model.params.channels={list(channels)}", f"model.params.stem_stride={stride}"],
            out_dir / f"c{len(graphs)}.onnx")
    clip = (np.random.default_rng(0).standard_normal(48000) * 0.05).astype(np.float32)
    runs = {}
    for name, g in graphs.items():
        session = ort_session(g["path"])
        feed = {"audio": clip[None], "audio_lengths": np.array([len(clip)], np.int64)}
        if "norm_mean" in g["names"]:
            feed.update({"norm_mean": np.zeros(g["n_feat"], np.float32), "norm_std": np.ones(g["n_feat"], np.float32)})
        runs[name] = (session, feed)
        for _ in range(10):  # warm-up
            session.run(["logits"], feed)
    timings = {name: [] for name in graphs}
    for _ in range(repeats):  # interleaved: the machine's noise hits every candidate alike
        for name, (session, feed) in runs.items():
            t = time.perf_counter()
            session.run(["logits"], feed)
            timings[name].append(time.perf_counter() - t)
    ref = percentiles(timings["tiny cnn_logmel (today)"])[0]
    print(f"architecture search: {len(graphs) - 3} candidates (edge_student.yaml's stem ranks; edge_dscnn.yaml with "
          f"{', '.join(SEARCH)}), "
          f"untrained, front end in the graph, ONNX Runtime fp32, 1 thread, a 3 s clip, {repeats} interleaved runs")
    print(f"{'model':<34}{'params':>9}{'MB':>7}{'p50 ms':>8}{'p95 ms':>8}{'vs tiny CNN':>12}  budget (<{BUDGET_MB:g} MB, "
          f"<={BUDGET_MS:g} ms)")
    for name in sorted(graphs, key=lambda n: percentiles(timings[n])[0]):
        a, b = percentiles(timings[name])
        mb = graphs[name]["path"].stat().st_size / 1e6
        fits = "fits" if mb < BUDGET_MB and a <= BUDGET_MS else ""
        print(f"{name:<34}{graphs[name]['params']:>9,}{mb:>7.3f}{a:>8.2f}{b:>8.2f}{a / ref:>11.2f}x  {fits}")
    print("accuracy is not measured by the search: a candidate that fits is a student to train and cross-validate "
          "(emodet cv --config configs/edge_student.yaml or edge_dscnn.yaml --set ...)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cv-dir", type=Path, default=Path("runs") / "bench_accuracy" / "emodb_cnn_logmel")
    ap.add_argument("--run", type=Path, help="run directory for the latency figures (default: the first fold)")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--fuse", type=Path, nargs="+", default=[], metavar="CV_DIR",
                    help="LOSO run directories to late-fuse with --cv-dir (the tiny fused model's figures)")
    ap.add_argument("--fused-only", action="store_true", help="only the fused model's figures")
    ap.add_argument("--compare", type=Path, nargs="+", default=[], metavar="CV_DIR",
                    help="more LOSO run directories (e.g. edge students): the same figures for each, in one table "
                         "beside --cv-dir's")
    ap.add_argument("--search", action="store_true", help="the architecture search: size and latency of the edge "
                    "student's candidates (SEARCH) beside the shipped student and the tiny CNN; no run needed")
    args = ap.parse_args()
    if args.search:
        with tempfile.TemporaryDirectory() as tmp:
            architecture_search(Path(tmp), args.repeats)
        return 0
    def first_fold(cv_dir: Path) -> Path | None:
        return next(iter(finished_folds(cv_dir)), None)

    missing = [d for d in [args.cv_dir, *args.compare, *([args.run] if args.run else [])] if not d.exists()]
    if missing:
        raise UsageError(f"{', '.join(map(str, missing))}: no such folder")
    run = args.run or first_fold(args.cv_dir)
    if run is None:
        raise UsageError(f"no finished fold in {args.cv_dir}: pass --cv-dir with a LOSO directory of emodet cv, "
                         "--run RUN_DIR, or run bench/accuracy.py --configs cnn_logmel first")
    if args.run is not None:
        load_run(args.run)  # a run or ensemble directory, or a clear error
    empty = [d for d in args.compare if first_fold(d) is None]
    if empty:
        raise UsageError(f"--compare {', '.join(map(str, empty))}: no finished folds (a LOSO directory of emodet cv)")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.fused_only:
            table = {}
            for cv_dir in [args.cv_dir, *args.compare]:
                first = run if cv_dir == args.cv_dir else first_fold(cv_dir)
                # with --run, --cv-dir's size and latency are that run's (its UARs stay the directory's)
                name = f"{cv_dir.name} (size, ms: {run})" if cv_dir == args.cv_dir and args.run else cv_dir.name
                table[name] = {**latency(first, Path(tmp), args.repeats),
                               **(quantisation_cost(cv_dir, Path(tmp)) or {})}
            if args.compare:
                print(f"\n{'model (LOSO dir)':<40} {'MB fp32':>9}{'MB int8':>9}{'p50 ms':>8}{'UAR fp32':>10}{'UAR int8':>10}")
                for name, t in table.items():
                    print(f"{name:<40} {t['mb_fp32']:>9.3f}{t['mb_int8']:>9.3f}{t['p50_fp32']:>8.2f}"
                          f"{t.get('uar_fp32', float('nan')):>10.3f}{t.get('uar_int8', float('nan')):>10.3f}")
        if args.fuse:
            fused_model([args.cv_dir, *args.fuse], Path(tmp), args.repeats)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except EmodetError as exc:  # a config, data or usage mistake: its message, not a traceback
        sys.exit(f"{Path(__file__).name}: error: {exc}")
