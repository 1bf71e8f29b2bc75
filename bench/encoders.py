"""Pretrained encoder features: extraction speed, and accuracy by layer and pooling, beside references.

    python bench/encoders.py speed [--repeats 30]      # x real time, 1 and 2 threads, PyTorch vs ONNX Runtime
    python bench/encoders.py layers [--corpus emodb]   # speaker-independent UAR of each hidden state

speed: the offline encoder (Smart Turn v3.2's Whisper-tiny) on 2 s and 5 s of real speech (EmoDB, else a
synthetic voice): emodet's PyTorch module at the recording's own length (1 and 2 threads), padded to its
8 s window as Smart Turn runs it, the same module exported to ONNX (ONNX Runtime, 1 and 2 threads), and
the original int8 Smart Turn graph (8 s, 1 thread) as the reference; median of --repeats runs,
interleaved so machine noise hits all alike.

layers: leave-one-speaker-out (EmoDB) or leave-one-actor-out (RAVDESS), multinomial logistic regression on
cached pooled states (the shipped head: C = 1 / (0.2 n), balanced classes, global z-score), one hidden
state at a time, all of them, and mean-only pooling; beside openSMILE eGeMAPS and ComParE functionals +
linear SVM (C = 0.01, per-speaker z-score: the references of ../shared/datasets/README.md), same run.
These per-layer figures describe the encoder; the shipped configs take every layer (not the best one
here: that would be choosing on test folds).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"


def _speech(seconds: float) -> np.ndarray:
    from emodet.core.audio import load_audio

    wav = DATASETS / "emodb" / "wav" / "03a01Fa.wav"
    if wav.is_file():
        base = load_audio(wav)
    else:
        t = np.arange(32000) / 16000
        base = (0.2 * np.sin(2 * np.pi * 150 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)
    return np.resize(base, int(seconds * 16000)).astype(np.float32)


def speed(repeats: int) -> None:
    import onnxruntime as ort
    import torch

    from emodet.export.graph import export_onnx
    from emodet.features.encoders import smart_turn
    from emodet.features.encoders.feature import ENCODER_DEFAULTS, build_module
    from emodet.features.encoders.whisper import WhisperFrontEnd

    smart_turn.load_smart_turn()  # a clear error when not fetched
    module = build_module(16000, dict(ENCODER_DEFAULTS))  # one window, as exported
    padded = build_module(16000, {**ENCODER_DEFAULTS, "pad_to_window": True})

    class Pooled(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x, lengths):
            return self.m(x, lengths)[0]

    out = Path("runs") / "bench_encoders"
    out.mkdir(parents=True, exist_ok=True)
    batch, samples = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("samples", min=2560, max=128000)
    export_onnx(Pooled(module).eval(), out / "encoder.onnx", (torch.randn(2, 16000) * 0.1, torch.tensor([16000, 8000])),
                ["audio", "audio_lengths"], {"x": {0: batch, 1: samples}, "lengths": {0: batch}})
    original = smart_turn.smart_turn_dir() / "model.onnx"
    frontend = WhisperFrontEnd(do_normalize=True)

    def session(path, threads):
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    for seconds in (2.0, 5.0):
        wav = _speech(seconds)
        x, n = torch.from_numpy(wav)[None], torch.tensor([len(wav)])
        padded_wav = np.zeros(128000, np.float32)
        padded_wav[-len(wav):] = wav
        with torch.inference_mode():
            mel8 = frontend(torch.from_numpy(padded_wav)[None], torch.tensor([128000]))[0].numpy()
        ours = {1: session(out / "encoder.onnx", 1), 2: session(out / "encoder.onnx", 2)}
        reference = session(original, 1)
        feed = {"audio": wav[None], "audio_lengths": np.array([len(wav)], np.int64)}

        def torch_run(m, threads):
            def run():
                torch.set_num_threads(threads)
                with torch.inference_mode():
                    m(x, n)
            return run

        cases = {
            "PyTorch, own length, 1 thread": torch_run(module, 1),
            "PyTorch, own length, 2 threads": torch_run(module, 2),
            "PyTorch, padded to 8 s, 1 thread": torch_run(padded, 1),
            "ONNX Runtime, own length, 1 thread": lambda: ours[1].run(None, feed),
            "ONNX Runtime, own length, 2 threads": lambda: ours[2].run(None, feed),
            "reference: Smart Turn's int8 graph, 8 s, 1 thread": lambda: reference.run(None, {"input_features": mel8}),
        }
        times = {name: [] for name in cases}
        for run in cases.values():
            run()  # warm-up
        for _ in range(repeats):
            for name, run in cases.items():
                t = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t)
        print(f"\n{seconds:g} s of speech: median of {repeats} runs (extraction only; the int8 graph's front end excluded)")
        for name, ts in times.items():
            ms = statistics.median(ts) * 1e3
            print(f"  {name:<52} {ms:8.1f} ms  {seconds / (ms / 1e3):7.1f}x real time")


def _loso_uar(x: np.ndarray, y: np.ndarray, groups: np.ndarray, labels: list, make) -> float:
    from emodet.evaluation.metrics import classification_metrics

    predicted = np.empty_like(y)
    for g in np.unique(groups):
        test = groups == g
        predicted[test] = make(x[~test], y[~test]).predict(x[test])
    return classification_metrics(y, predicted, labels)["uar"]


def layers(corpus: str) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    from emodet.data.cache import FeatureCache
    from emodet.data.corpora import prepare_corpus
    from emodet.data.prepare import label_order
    from emodet.features.encoders.feature import ENCODER_DEFAULTS

    root = DATASETS / corpus
    if not root.is_dir():
        print(f"{corpus} not found at {root}")
        return
    rows = prepare_corpus(corpus, root).rows
    labels = label_order(rows)
    y = np.array([labels.index(r["label"]) for r in rows])
    groups = np.array([r["speaker"] for r in rows])
    cache_dir = Path.home() / ".cache" / "emodet-bench"
    enc = FeatureCache(cache_dir, "encoder", dict(ENCODER_DEFAULTS))
    full = np.stack([enc.load(root, r["path"])[:, 0] for r in rows]).astype(np.float64).reshape(len(rows), 5, 2, -1)

    def lr(a, b):
        mean, std = a.mean(0), np.maximum(a.std(0), 1e-5)
        model = LogisticRegression(C=1 / (0.2 * len(b)), class_weight="balanced", max_iter=3000)
        model.fit((a - mean) / std, b)
        return type("M", (), {"predict": lambda self, t: model.predict((t - mean) / std)})()

    def per_speaker(x):
        z = np.empty_like(x)
        for g in np.unique(groups):
            z[groups == g] = (x[groups == g] - x[groups == g].mean(0)) / np.maximum(x[groups == g].std(0), 1e-5)
        return z

    protocol = "leave-one-speaker-out" if corpus == "emodb" else "leave-one-actor-out"
    print(f"\n{corpus}, {protocol}, pooled UAR (chance {1 / len(labels):.2f}); logistic regression, global z-score")
    for name, x in [*((f"hidden state {i}, mean + std", full[:, i].reshape(len(rows), -1)) for i in range(5)),
                    ("all hidden states, mean + std", full.reshape(len(rows), -1)),
                    ("all hidden states, mean only", full[:, :, 0].reshape(len(rows), -1))]:
        print(f"  {name:<44} {_loso_uar(x, y, groups, labels, lr):.3f}", flush=True)
    for feature in ("egemaps", "compare"):
        cache = FeatureCache(cache_dir, feature)
        x = per_speaker(np.stack([cache.load(root, r["path"])[:, 0] for r in rows]).astype(np.float64))
        svm = _loso_uar(x, y, groups, labels, lambda a, b: LinearSVC(C=0.01, class_weight="balanced",
                                                                    max_iter=20000).fit(a, b))
        print(f"  reference: {feature} + linear SVM (per-speaker z-score) {svm:.3f}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("speed", "layers"))
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--corpus", default="emodb", choices=("emodb", "ravdess", "nemo"))
    args = ap.parse_args()
    if args.what == "speed":
        speed(args.repeats)
    else:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        layers(args.corpus)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # noqa: BLE001 - a benchmark's own mistakes print as one line
        from emodet.core.errors import EmodetError

        if not isinstance(exc, EmodetError):
            raise
        sys.exit(f"{Path(__file__).name}: error: {exc}")
