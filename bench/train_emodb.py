"""Train the shipped configs on EmoDB and report held-out-speaker results and training speed.

    python bench/train_emodb.py [--configs resnet_mfcc fc_compare] [--epochs N] [--runs-dir DIR]

Each config runs exactly as a user would run it (`emodet train --config configs/X.yaml
--data-root ../shared/datasets/emodb`): speaker-independent split (seed 0: 7 train, 1
validation, 2 test speakers), model chosen on the validation speaker, figures on the 2 test
speakers. Prints test UAR/WA/macro-F1, seconds per epoch (median), and the share of training
step time spent waiting for data (median over epochs; target < 5%). A single split of 2 test
speakers is noisy: bench/accuracy.py gives the leave-one-speaker-out figures.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from emodet.config import load_config
from emodet.workflows.experiment import run_experiment

REPO = Path(__file__).resolve().parents[1]
EMODB = REPO.parent / "shared" / "datasets" / "emodb"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["resnet_mfcc", "fc_compare"])
    ap.add_argument("--epochs", type=int, help="override training.epochs")
    ap.add_argument("--runs-dir", type=Path, help="keep the run directories here (default: a temporary folder)")
    ap.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "emodet-bench",
                    help="feature cache shared between benchmark runs")
    args = ap.parse_args()
    if not EMODB.is_dir():
        print(f"EmoDB not found at {EMODB}; this benchmark needs it")
        return 0
    tmp = tempfile.TemporaryDirectory(prefix="emodet-train-")
    runs_dir = args.runs_dir or Path(tmp.name)
    print(f"EmoDB: {EMODB}; torch threads {torch.get_num_threads()}; runs in {runs_dir}\n")
    rows = []
    for name in args.configs:
        overrides = [f"features.cache_dir={args.cache_dir}"]
        if args.epochs:
            overrides.append(f"training.epochs={args.epochs}")
        cfg = load_config(REPO / "configs" / f"{name}.yaml", overrides, str(EMODB))
        run_name = f"{name}_{time.strftime('%Y%m%d_%H%M%S')}"
        t0 = time.perf_counter()
        metrics = run_experiment(cfg, run_name, runs_dir, progress=False)
        total = time.perf_counter() - t0
        with open(runs_dir / run_name / "history.csv") as fh:
            history = list(csv.DictReader(fh))
        sec = statistics.median(float(r["seconds"]) for r in history)
        wait = statistics.median(float(r["data_wait_share"]) for r in history)
        rows.append((name, metrics, sec, wait, total, len(history)))
    print(f"\n{'config':<16}{'test UAR':>9}{'WA':>7}{'F1':>7}{'params':>11}{'s/epoch':>9}{'data wait':>11}"
          f"{'epochs':>8}{'total s':>9}   test speakers")
    for name, m, sec, wait, total, n in rows:
        print(f"{name:<16}{m['uar']:>9.3f}{m['wa']:>7.3f}{m['macro_f1']:>7.3f}{m['parameters']:>11,}{sec:>9.2f}"
              f"{wait * 100:>10.1f}%{n:>8}{total:>9.0f}   {', '.join(m['test']['speakers'])}")
    print("\nreferences (same corpus copy, LOSO, ../shared/datasets/README.md): eGeMAPS+SVM UAR 0.73, "
          "ComParE+SVM 0.83; data-wait target < 5%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
