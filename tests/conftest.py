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
