"""Speaker-independent accuracy: leave-one-speaker-out over the shipped configs, and late-fusion ensembles.

    python bench/accuracy.py --corpus emodb [--configs fc_compare resnet_mfcc ...] [--ensemble fc_compare+resnet_mfcc]
    python bench/accuracy.py --corpus ravdess --configs fc_compare

The best recipe (late fusion of three seeds of fc_compare and two of cnn_logmel; name@N is
the config trained with training.seed=N):

    python bench/accuracy.py --configs fc_compare fc_compare@1 fc_compare@2 cnn_logmel cnn_logmel@1 \
        --ensemble fc_compare+fc_compare@1+fc_compare@2+cnn_logmel+cnn_logmel@1

The tiny fused model (0.62 MB: the tiny CNN and the linear model over ComParE functionals;
bench/edge.py --fuse runs the same fusion through the torch-free runtime):

    python bench/accuracy.py --configs linear_compare cnn_logmel --ensemble linear_compare+cnn_logmel

Every config runs as `emodet cv --config configs/X.yaml --folds loso` would (validation
speakers drawn from each fold's training speakers, model selection on them only; the
held-out speaker is never seen). Runs are kept in --runs-dir and resumed, so an interrupted
benchmark continues where it stopped. An ensemble averages the class probabilities of its
members for each held-out recording (same folds, so still speaker-independent).

References on the same corpus copies (../shared/datasets/README.md and issue 5), all LOSO
with per-speaker z-score: EmoDB eGeMAPS+SVM 0.73, ComParE+SVM 0.83, plain small CNN 0.81;
RAVDESS eGeMAPS+SVM 0.575, ComParE+SVM 0.645.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from emodet.config import load_config
from emodet.cv import run_cv
from emodet.errors import EmodetError
from emodet.evaluation.metrics import classification_metrics

REPO = Path(__file__).resolve().parents[1]
CORPORA = {"emodb": REPO.parent / "shared" / "datasets" / "emodb",
           "ravdess": REPO.parent / "shared" / "datasets" / "ravdess"}
REFERENCES = {"emodb": [("eGeMAPS + SVM (reference)", 0.73), ("ComParE + SVM (reference)", 0.83),
                        ("plain small CNN (reference floor)", 0.81)],
              "ravdess": [("eGeMAPS + SVM (reference)", 0.575), ("ComParE + SVM (reference)", 0.645)]}


def pooled_predictions(cv_dir: Path) -> dict[str, dict]:
    with open(cv_dir / "predictions_pooled.csv", newline="") as fh:
        return {r["path"]: r for r in csv.DictReader(fh)}


def fuse(members: list[dict[str, dict]], labels: list[str]) -> dict:
    paths = sorted(set.intersection(*(set(m) for m in members)))
    if any(len(m) != len(paths) for m in members):
        raise SystemExit("ensemble members hold predictions for different recordings: fuse runs of one corpus and "
                         "one set of folds")
    probs = np.mean([[[float(m[p][f"p_{lab}"]) for lab in labels] for p in paths] for m in members], axis=0)
    index = {lab: i for i, lab in enumerate(labels)}
    targets = [index[members[0][p]["label"]] for p in paths]
    return classification_metrics(targets, probs.argmax(1), labels)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", choices=sorted(CORPORA), default="emodb")
    ap.add_argument("--configs", nargs="*", default=["fc_compare", "fc_mfcc", "resnet_mfcc"])
    ap.add_argument("--ensemble", nargs="*", default=[],
                    help="members joined by +: configs run here or LOSO directories, e.g. fc_compare+runs/x/emodb_cnn_logmel")
    ap.add_argument("--folds", default="loso",
                    help="loso (the benchmark's protocol) or K folds by speaker (run names get _kK), e.g. for a "
                         "large corpus where 24 CNN trainings do not fit the time at hand")
    ap.add_argument("--runs-dir", type=Path, default=Path("runs") / "bench_accuracy")
    ap.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "emodet-bench")
    ap.add_argument("--set", action="append", default=[], dest="overrides", help="override for every config")
    args = ap.parse_args()
    root = CORPORA[args.corpus]
    if not root.is_dir():
        print(f"{args.corpus} not found at {root}; this benchmark needs it")
        return 0
    results = {}
    suffix = "" if args.folds == "loso" else f"_k{int(args.folds)}"

    def run_name(name: str) -> str:
        return f"{args.corpus}_{name.replace(':', '_').replace('@', '_seed')}{suffix}"

    for name in args.configs:
        name_seed = name.split("@")  # config[:preset][@seed] e.g. resnet_mfcc:tiny, cnn_logmel@1
        variant = name_seed[0].split(":")
        overrides = [f"features.cache_dir={args.cache_dir}", *args.overrides]
        if len(variant) > 1:
            overrides.append(f"model.preset={variant[1]}")
        if len(name_seed) > 1:
            overrides.append(f"training.seed={int(name_seed[1])}")
        cfg = load_config(REPO / "configs" / f"{variant[0]}.yaml", overrides, str(root))
        t0 = time.perf_counter()
        summary = run_cv(cfg, args.folds, run_name(name), args.runs_dir, progress=False,
                         new_name_hint="pass another --runs-dir (this benchmark names its runs <corpus>_<config>)")
        folds = [json.loads((args.runs_dir / run_name(name) / f"fold_{f['fold']:02d}" / "metrics.json").read_text())
                 for f in summary["folds"]]
        # training time as each fold recorded it, so a benchmark resumed from finished folds still reports it
        fold_seconds = sum(m["train_seconds"] for m in folds)
        results[name] = {"summary": summary, "seconds": fold_seconds, "params": folds[0]["parameters"],
                         "labels": folds[0]["labels"]}
        print(f"{name}: pooled UAR {summary['pooled']['uar']:.3f} (fold mean {summary['uar_mean']:.3f} +- "
              f"{summary['uar_std']:.3f}), {fold_seconds:.0f} s of training for all folds "
              f"({time.perf_counter() - t0:.0f} s in this call)", flush=True)
    fused = {}
    for spec in args.ensemble:
        # a member is a config benchmarked here (name[:preset][@seed]) or the path of a finished LOSO directory
        dirs = [Path(m) if "/" in m else args.runs_dir / run_name(m) for m in spec.split("+")]
        labels = json.loads((dirs[0] / "fold_00" / "metrics.json").read_text())["labels"]
        fused[spec] = fuse([pooled_predictions(d) for d in dirs], labels)

    protocol = "leave-one-speaker-out" if args.folds == "loso" else f"{int(args.folds)} folds by speaker"
    print(f"\n{args.corpus}, {protocol}, pooled over all held-out recordings")
    print(f"{'system':<40}{'UAR':>7}{'WA':>7}{'F1':>7}{'fold UAR':>16}{'params':>11}{'CV min':>10}")
    for name, r in results.items():
        s = r["summary"]
        print(f"{name:<40}{s['pooled']['uar']:>7.3f}{s['pooled']['wa']:>7.3f}{s['pooled']['macro_f1']:>7.3f}"
              f"{s['uar_mean']:>9.3f} +-{s['uar_std']:.2f}{r['params']:>11,}{r['seconds'] / 60:>10.1f}")
    for spec, m in fused.items():
        print(f"{'ensemble ' + spec:<40}{m['uar']:>7.3f}{m['wa']:>7.3f}{m['macro_f1']:>7.3f}")
    for label, value in REFERENCES[args.corpus]:
        print(f"{label:<40}{value:>7.3f}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except EmodetError as exc:  # a config, data or usage mistake: its message, not a traceback
        sys.exit(f"{Path(__file__).name}: error: {exc}")
