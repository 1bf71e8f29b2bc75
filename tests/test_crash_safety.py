"""SIGKILL at several moments of a cache build (see test_cache.py) and of training; the rerun or
--resume completes, every file left behind is whole, and the final metrics equal an uninterrupted run's."""

import csv
import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO



def _args(corpus, tmp_path, name):
    return [sys.executable, "-m", "emodet", "train", "--config", str(REPO / "configs" / "resnet_logmel.yaml"),
            "--run-name", name, "--data-root", str(corpus), "--runs-dir", str(tmp_path / "runs"),
            "--set", "model.preset=tiny", "--set", "training.epochs=7", "--set", "training.early_stopping.patience=0",
            "--set", "data.split.val=1", "--set", "data.split.test=1", "--set", f"features.cache_dir={tmp_path / 'c'}",
            "--no-progress"]


def _history_rows(run_dir):
    try:
        with open(run_dir / "history.csv", newline="") as fh:
            return len(list(csv.DictReader(fh)))
    except FileNotFoundError:
        return 0


def _assert_whole(run_dir):
    """Every file a killed run left is complete: checkpoints load, CSV and JSON parse."""
    for ckpt in (run_dir / "checkpoints").glob("*.pt"):
        torch.load(ckpt, weights_only=True)
    for path in run_dir.glob("*.csv"):
        rows = list(csv.DictReader(open(path, newline="")))
        assert rows and all(None not in r and None not in r.values() for r in rows), path  # no row cut short
    for path in run_dir.glob("*.json"):
        json.loads(path.read_text())
    # a killed writer may leave only its own temporary files (hidden, named for their target)
    assert all(t.name.startswith(".") for t in run_dir.rglob("*.tmp"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, synth_corpus):
    tmp = tmp_path_factory.mktemp("ref")
    out = subprocess.run(_args(synth_corpus, tmp, "ref"), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    run = tmp / "runs" / "ref"
    return json.loads((run / "metrics.json").read_text()), torch.load(run / "checkpoints" / "last.pt", weights_only=True)


@pytest.mark.parametrize("kill_after", [pytest.param(1, marks=pytest.mark.slow), 3,
                                        pytest.param(5, marks=pytest.mark.slow)])
def test_training_killed_and_resumed_equals_uninterrupted(tmp_path, synth_corpus, reference, kill_after):
    ref_metrics, ref_last = reference
    run = tmp_path / "runs" / "cut"
    proc = subprocess.Popen(_args(synth_corpus, tmp_path, "cut"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while _history_rows(run) < kill_after and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _history_rows(run)
    assert kill_after <= done < 7, f"the run was not killed in its middle ({done} epochs)"
    assert not (run / "metrics.json").exists()
    _assert_whole(run)
    resumed = subprocess.run(_args(synth_corpus, tmp_path, "cut") + ["--resume"], capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from epoch" in resumed.stdout
    assert not list(run.rglob("*.tmp"))  # the resumed run removed what the killed one left half-written
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("uar", "wa", "macro_f1", "confusion_matrix", "best_epoch"):
        assert metrics[key] == ref_metrics[key], key
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    for key, value in ref_last["model"].items():
        torch.testing.assert_close(last["model"][key], value, rtol=0, atol=0)
