"""Edge deployment figures: latency per 3 s clip on one thread, model sizes, and the UAR cost of int8.

    python bench/edge.py [--cv-dir runs/bench_accuracy/emodb_cnn_logmel]   # the tiny CNN (configs/cnn_logmel.yaml)

Latency (p50/p95 over --repeats runs of a 3 s clip, one thread, after warm-up), measured
side by side in this run for: ONNX Runtime fp32 with the log-mel front end in the graph,
ONNX Runtime int8 (dynamic quantisation), and PyTorch eager (the same front end module and
model, `torch.inference_mode`). Per-speaker normalisation statistics are given as calibrated
inputs, as a device would after calibration.

Quantisation cost: every fold of a leave-one-speaker-out run directory (from
bench/accuracy.py) is exported fp32 and int8 and evaluated on its held-out speaker through
the torch-free runtime; the pooled UAR of both is compared.
Targets (issue 6): tiny model with features in the graph p50 <= 5 ms; ONNX Runtime >= 1.5x
faster than eager; int8 <= 40% of fp32 size with <= 1 point of UAR lost.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from emodet.audio import load_audio
from emodet.data.manifest import resolve_path
from emodet.evaluation.metrics import classification_metrics
from emodet.export.onnx import DeployModel, export_run
from emodet.runtime import EmotionPredictor

REPO = Path(__file__).resolve().parents[1]


def percentiles(times: list[float]) -> tuple[float, float]:
    arr = np.array(times) * 1e3
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 95))


def latency(run_dir: Path, out_dir: Path, repeats: int) -> None:
    import onnxruntime as ort

    from emodet.ensemble import load_predictor, predictor_info
    from emodet.features import get_feature_spec

    report = export_run(run_dir, out_dir / "m.onnx", with_features=True, quantize="int8")
    info = predictor_info(run_dir)
    sr = info["sample_rate"]
    clip = (np.random.default_rng(0).standard_normal(3 * sr) * 0.05).astype(np.float32)
    n_feat = info["input_shape"][0]
    feed = {"audio": clip[None], "audio_lengths": np.array([len(clip)], np.int64)}
    if "norm_mean" in report["inputs"]:
        feed.update({"norm_mean": np.zeros(n_feat, np.float32), "norm_std": np.ones(n_feat, np.float32)})
    torch.set_num_threads(1)
    model = load_predictor(run_dir).eval()
    frontend = get_feature_spec(info["feature"]).module_factory(sr, info["feature_params"]).eval()  # torch.stft
    from emodet.features.spectral import resolve_frame_params

    hop = resolve_frame_params(sr, info["feature_params"])["hop_length"]
    eager = DeployModel(model, frontend, hop, info["normalizer"]).eval()
    eager_inputs = [torch.from_numpy(feed[k]) for k in report["inputs"]]

    def ort_session(path):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

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
             "PyTorch eager": sum(p.numel() * p.element_size() for p in model.parameters())}
    print(f"latency of one 3 s clip, features in the graph, 1 thread, {repeats} runs ({run_dir})")
    print(f"{'engine':<22}{'p50 ms':>9}{'p95 ms':>9}{'size MB':>10}")
    p50 = {}
    for name, times in timings.items():
        a, b = percentiles(times)
        p50[name] = a
        print(f"{name:<22}{a:>9.2f}{b:>9.2f}{sizes[name] / 1e6:>10.3f}")
    print(f"ONNX Runtime fp32 vs eager: {p50['PyTorch eager'] / p50['ONNX Runtime fp32']:.2f}x faster; "
          f"int8 size {sizes['ONNX Runtime int8'] / sizes['ONNX Runtime fp32']:.0%} of fp32")


def quantisation_cost(cv_dir: Path, out_dir: Path) -> None:
    folds = sorted(p for p in cv_dir.glob("fold_*") if (p / "metrics.json").exists())
    if not folds:
        print(f"\nno finished folds in {cv_dir}: run bench/accuracy.py first for the int8 UAR figure")
        return
    preds = {"fp32": [], "int8": []}
    targets = []
    labels = None
    for fold in folds:
        report = export_run(fold, out_dir / f"{fold.name}.onnx", with_features=True, quantize="int8")
        with open(fold / "manifest.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        test = [r for r in rows if r["split"] == "test"]
        cfg_root = json.loads(json.dumps(__import__("yaml").safe_load((fold / "config.yaml").read_text())))["data"]["root"]
        wavs = [load_audio(resolve_path(r["path"], cfg_root, fold / "manifest.csv")) for r in test]
        for kind, path in (("fp32", report["path"]), ("int8", report["int8_path"])):
            p = EmotionPredictor(path)
            p.calibrate(wavs)  # per-speaker statistics of the held-out speaker's own recordings, as in training
            labels = p.labels
            preds[kind] += [int(np.argmax(list(d.values()))) for d in p.predict_batch(wavs)]
        targets += [labels.index(r["label"]) for r in test]
    m = {k: classification_metrics(targets, v, labels) for k, v in preds.items()}
    agree = np.mean(np.array(preds["fp32"]) == np.array(preds["int8"]))
    print(f"\nint8 vs fp32 on EmoDB held-out speakers ({len(folds)} LOSO folds, {len(targets)} recordings, "
          f"torch-free runtime)")
    print(f"fp32 UAR {m['fp32']['uar']:.3f}  WA {m['fp32']['wa']:.3f}")
    print(f"int8 UAR {m['int8']['uar']:.3f}  WA {m['int8']['wa']:.3f}  -> change {100 * (m['int8']['uar'] - m['fp32']['uar']):+.1f} "
          f"points; same top label on {agree:.1%} of recordings")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cv-dir", type=Path, default=Path("runs") / "bench_accuracy" / "emodb_cnn_logmel")
    ap.add_argument("--run", type=Path, help="run directory for the latency figures (default: the first fold)")
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()
    run = args.run or next(iter(sorted(args.cv_dir.glob("fold_*"))), None)
    if run is None:
        print("no run: pass --run RUN_DIR or run bench/accuracy.py --configs cnn_logmel first")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        latency(run, Path(tmp), args.repeats)
        quantisation_cost(args.cv_dir, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
