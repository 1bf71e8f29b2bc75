import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"
EMODB = SHARED_DATASETS / "emodb"
RAVDESS = SHARED_DATASETS / "ravdess"


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory):
    """A small synthetic corpus: 5 labels x 3 speakers x 3 utterances (45 files)."""
    from emodet.data.synth import generate_corpus

    root = tmp_path_factory.mktemp("synth")
    generate_corpus(root, per_class=3, speakers=3, seed=1)
    return root


def cli(*args):
    """Run ``emodet ARGS`` in this process (no interpreter start-up, no torch import): a CompletedProcess
    with ``returncode``, ``stdout`` and ``stderr``, like ``run_cli``."""
    import contextlib
    import io

    from emodet.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse's own exits (usage errors, --help, --version)
            code = exc.code if isinstance(exc.code, int) else 2
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def run_cli(*args, cwd=None, timeout=300, env=None):
    """Run ``python -m emodet ARGS`` in a subprocess; returns CompletedProcess with text output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "emodet", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=full_env)


def sine(freq=440.0, sr=16000, seconds=1.0, amp=0.5):
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def speechlike(sr=16000, seconds=1.5, seed=0):
    """A harmonic signal with noise and silence, so spectra have peaks, valleys and a floor."""
    rng = np.random.default_rng(seed)
    n = int(sr * seconds)
    t = np.arange(n) / sr
    f0 = 140 + 30 * np.sin(2 * np.pi * 2 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 30))
    x = x * (np.sin(2 * np.pi * 3 * t) > -0.3) + 0.01 * rng.standard_normal(n)
    x[: n // 10] = 0.0
    return (0.2 * x / np.abs(x).max()).astype(np.float32)


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory, synth_corpus):
    """Two small trained runs for the export, runtime and serving tests (trained once a session):

    - ``fc``: MLP on MFCC statistics, global statistics, two speakers training and one validating, no
      test split (a final model trained on every speaker);
    - ``cnn``: the tiny log-mel CNN of configs/cnn_logmel.yaml, per-speaker statistics, one test speaker.
    """
    from emodet.config import load_config
    from emodet.workflows.experiment import run_experiment

    base = tmp_path_factory.mktemp("runs")
    common = [f"data.root={synth_corpus}", "data.corpus=folder", f"features.cache_dir={base / 'cache'}",
              "training.early_stopping.patience=0"]
    run_experiment(load_config(REPO / "configs" / "fc_mfcc.yaml", common + [
        "data.normalize=global", "data.split.val=1", "data.split.test=0", "training.epochs=40",
        "training.batch_size=8", "training.lr=0.005"]), "fc", base, progress=False)
    run_experiment(load_config(REPO / "configs" / "cnn_logmel.yaml", common + [
        "data.split.test=1", "training.epochs=3"]), "cnn", base, progress=False)
    return base


@pytest.fixture(scope="session")
def exported(trained_runs, tmp_path_factory):
    """``fc.onnx`` (features computed by the runtime) and ``cnn.onnx`` (front end in the graph, and its
    int8 twin ``cnn.int8.onnx``), with the export reports."""
    from emodet.export.onnx import export_run

    out = tmp_path_factory.mktemp("onnx")
    reports = {"fc": export_run(trained_runs / "fc", out / "fc.onnx"),
               "cnn": export_run(trained_runs / "cnn", out / "cnn.onnx", with_features=True, quantize="int8")}
    return out, reports


class Cut(Exception):
    """Training stopped right after a checkpoint was written, as a kill would stop it."""


def cut_after_epoch(monkeypatch, epoch: int):
    """Make training raise ``Cut`` right after epoch ``epoch``'s ``last.pt`` is written (0-based); returns the
    function that undoes it."""
    import emodet.training.loop as loop

    real_save = loop.save_checkpoint

    def save_then_die(path, state):
        real_save(path, state)
        if path.name == "last.pt" and state["epoch"] == epoch:
            raise Cut

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    return lambda: monkeypatch.setattr(loop, "save_checkpoint", real_save)
