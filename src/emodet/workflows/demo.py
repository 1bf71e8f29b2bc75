"""``emodet demo``: the whole path on the built-in synthetic corpus, no download needed.

Synthesise a corpus, write its manifest with a speaker-independent split, build the feature
cache, train two models (an MLP on MFCC statistics and a tiny CRNN on log-mel), print their
held-out-speaker results, export the tiny model to ONNX with its front end in the graph and
run it with the torch-free runtime. Everything lands under ``--out``; a rerun reuses what exists.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import time
from collections import Counter
from pathlib import Path

from ..config import load_config
from ..data.synth import generate_corpus
from ..core.errors import UsageError
from .experiment import run_experiment
from ..core.io import atomic_write_json

log = logging.getLogger(__name__)

DEMO_MODELS = (
    # run name, feature, feature params, model, preset, epochs
    ("fc_mfcc", "mfcc", {"n_mfcc": 40}, "fc", "base", 30),
    ("crnn_tiny_logmel", "logmel", {"n_mels": 64}, "crnn", "tiny", 12),
)


def _corpus(out: Path, per_class: int, speakers: int, seed: int) -> list[dict]:
    corpus = out / "corpus"
    settings = {"per_class": per_class, "speakers": speakers, "seed": seed}
    marker = corpus / "synth.json"
    start = time.perf_counter()
    if marker.exists() and json.loads(marker.read_text()) == settings:
        with open(corpus / "metadata.csv", newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        log.info(f"[1/4] synthetic corpus already in {corpus} ({len(rows)} files)")
        return rows
    rows = generate_corpus(corpus, per_class=per_class, speakers=speakers, seed=seed)
    atomic_write_json(marker, settings)
    log.info(f"[1/4] synthesised {len(rows)} files in {time.perf_counter() - start:.1f} s -> {corpus}")
    return rows


@contextlib.contextmanager
def _quiet_training():
    loggers = [logging.getLogger(n) for n in ("emodet.training", "emodet.data", "emodet.workflows.experiment")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def run_demo(out: str | Path, per_class: int = 12, speakers: int = 8, seed: int = 0, epochs: int | None = None) -> int:
    """Run the demo under ``out``; returns the exit code."""
    out = Path(out)
    if speakers < 3:
        raise UsageError(f"emodet demo needs at least 3 speakers (train, validation, test), got --speakers {speakers}")
    rows = _corpus(out, per_class, speakers, seed)
    labels = Counter(r["label"] for r in rows)
    log.info(f"      {len(rows)} files, {sum(float(r['duration_s']) for r in rows) / 60:.1f} min, {speakers} speakers; "
          + ", ".join(f"{k} {v}" for k, v in sorted(labels.items())))
    results = []
    for i, (name, feature, params, model, preset, n_epochs) in enumerate(DEMO_MODELS):
        overrides = [f"data.root={out / 'corpus'}", "data.corpus=folder", "data.normalize=speaker",
                     "data.split.val=1", f"data.split.test={1 if speakers < 6 else 2 if speakers < 10 else 0.2}",
                     f"data.split.seed={seed}", f"features.type={feature}", f"features.params={json.dumps(params)}",
                     f"features.cache_dir={out / 'cache'}", f"model.name={model}", f"model.preset={preset}",
                     f"training.epochs={epochs or n_epochs}", "training.early_stopping.patience=0",
                     "training.early_stopping.select=last",
                     "training.loss.label_smoothing=0.1", f"training.seed={seed}"]
        if model != "fc":
            overrides.append("training.augment.specaugment=true")
        cfg = load_config(None, overrides)
        run_dir = out / "runs" / name
        start = time.perf_counter()
        if (run_dir / "metrics.json").exists():
            metrics = json.loads((run_dir / "metrics.json").read_text())
            log.info(f"[{2 + i}/4] {name}: already trained in {run_dir}")
        else:
            with _quiet_training():  # one line a model, not one an epoch
                metrics = run_experiment(cfg, name, out / "runs", resume=(run_dir / "config.yaml").exists(),
                                         progress=False)
            log.info(f"[{2 + i}/4] {name}: trained in {time.perf_counter() - start:.0f} s -> {run_dir}")
        results.append((name, metrics))

    log.info("")
    log.info(f"{'model':<20}{'params':>10}{'test UAR':>10}{'WA':>8}{'macro-F1':>10}   held-out speakers")
    for name, m in results:
        log.info(f"{name:<20}{m['parameters']:>10,}{m['uar']:>10.3f}{m['wa']:>8.3f}{m['macro_f1']:>10.3f}   "
              f"{', '.join(m['test']['speakers'])}")
    log.info(f"\nchance UAR {1 / len(labels):.2f}. Per-speaker normalisation; test speakers never seen in training. "
          f"Reports, curves and confusion matrices: {out / 'runs'}")
    _export_and_predict(out, results[-1][0], results[-1][1])
    return 0


def _export_and_predict(out: Path, name: str, metrics: dict) -> None:
    """Export the tiny model with its front end in the graph and run it on held-out recordings, torch-free."""
    from ..export.onnx import export_run
    from ..runtime import EmotionPredictor

    model_path = out / f"{name}.onnx"
    if not model_path.exists():
        report = export_run(out / "runs" / name, model_path, with_features=True)
        log.info(f"\n[4/4] exported {name} -> {model_path} ({report['bytes'] / 1e6:.2f} MB, raw audio in; "
              f"|ONNX Runtime - PyTorch| <= {report['max_abs_diff']:.1e})")
    else:
        log.info(f"\n[4/4] {model_path} already exported")
    speaker = metrics["test"]["speakers"][0]
    clips = sorted((out / "corpus").glob(f"*/{speaker}_*.wav"))
    predictor = EmotionPredictor(model_path)
    predictor.calibrate(clips)  # per-speaker statistics from the speaker's recordings, labels unused
    start = time.perf_counter()
    shown = clips[:: max(1, len(clips) // 4)][:4]
    results = predictor.predict_batch(shown)
    ms = (time.perf_counter() - start) / len(shown) * 1e3
    for clip, probs in zip(shown, results):
        log.info(f"      {clip.parent.name}/{clip.name}: {max(probs, key=probs.get)} ({max(probs.values()):.2f})")
    log.info(f"      {ms:.1f} ms a clip with onnxruntime, calibrated on {len(clips)} recordings of {speaker} (the "
             f"model normalises per speaker); in Python: p = EmotionPredictor('{model_path}'); "
             f"p.calibrate(['a.wav', 'b.wav', 'c.wav']); p.predict('clip.wav')")
