"""Leave one corpus out: train on two corpora, test on the third, as a user's recordings would meet a model.

    python bench/cross_corpus.py [--configs encoder_whisper_linear general] [--fuse encoder_whisper_linear+...]

Corpora: the EmoDB (German), RAVDESS (English) and nEMO (Polish) copies in ../shared/datasets, four
classes they share (neutral, happy, sad, angry), one manifest with speakers prefixed by corpus.
Each config runs as `emodet cv --folds corpus` would, twice: with global statistics of the training
corpora (``none``: nothing of the target corpus) and with each corpus normalised by its own
statistics (``corpus``: the target's unlabelled recordings). Pooled UAR on each target corpus and
their mean. The reference runs in the same call: openSMILE eGeMAPSv02 functionals + linear SVM
(C = 0.01, scikit-learn LinearSVC, balanced class weights), with global, per-corpus and
per-speaker statistics (the last needs enrollment; shown for scale). bench/PROTOCOLS.md holds
the protocol as declared before the figures.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from emodet.config import load_config
from emodet.core.errors import EmodetError
from emodet.core.fusion import fuse_probabilities
from emodet.data.cache import FeatureCache
from emodet.data.corpora import merge_corpora, prepare_corpus
from emodet.data.dataset import locate
from emodet.data.manifest import write_manifest
from emodet.evaluation.metrics import classification_metrics
from emodet.workflows.cv import run_cv

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"
CORPORA = ("emodb", "ravdess", "nemo")
LABELS = ["neutral", "happy", "sad", "angry"]
CONDITIONS = {"none": "global", "corpus": "corpus"}


def build_manifest(out: Path) -> Path:
    """The three corpora's four shared classes in one manifest (paths relative to its folder)."""
    path = out / "three_corpora_4class.csv"
    if not path.exists():
        results = [prepare_corpus(name, DATASETS / name, labels=LABELS) for name in CORPORA]
        out.mkdir(parents=True, exist_ok=True)
        write_manifest(path, merge_corpora(results, out))
    return path


def rows_of(manifest: Path) -> list[dict]:
    with open(manifest, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def reference(manifest: Path, cache_dir: Path) -> dict[str, dict[str, float]]:
    """eGeMAPS + linear SVM, leave one corpus out, with global / per-corpus / per-speaker z-scores."""
    from sklearn.svm import LinearSVC

    rows = rows_of(manifest)
    cache = FeatureCache(cache_dir, "egemaps")
    x = np.stack([cache.load(*locate(r["path"], None, manifest))[:, 0] for r in rows])
    y = np.array([LABELS.index(r["label"]) for r in rows])
    out = {}
    for mode, key in (("none", None), ("corpus", "corpus"), ("speaker (enrollment)", "speaker")):
        z = x.copy()
        if key is not None:
            for group in {r[key] for r in rows}:
                idx = [i for i, r in enumerate(rows) if r[key] == group]
                z[idx] = (x[idx] - x[idx].mean(0)) / (x[idx].std(0) + 1e-8)
        out[mode] = {}
        for target in CORPORA:
            test = np.array([r["corpus"] == target for r in rows])
            zz = z if key is not None else (z - z[~test].mean(0)) / (z[~test].std(0) + 1e-8)
            svm = LinearSVC(C=0.01, class_weight="balanced", max_iter=20000).fit(zz[~test], y[~test])
            out[mode][target] = classification_metrics(y[test], svm.predict(zz[test]), LABELS)["uar"]
    return out


def run_system(config: str, condition: str, manifest: Path, runs_dir: Path, cache_dir: Path,
               overrides: list[str], suffix: str = "") -> tuple[dict[str, float], dict[str, dict]]:
    """``({target: UAR}, {path: prediction row})`` of one config under one condition."""
    cfg = load_config(REPO / "configs" / f"{config}.yaml", [
        f"data.manifest={manifest}", f"data.normalize={CONDITIONS[condition]}", f"features.cache_dir={cache_dir}",
        *overrides])
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=None))
    name = f"{config}_{condition}{suffix}"
    summary = run_cv(cfg, "corpus", name, runs_dir, progress=False,
                     new_name_hint="pass another --runs-dir (this benchmark names its runs <config>_<condition>)")
    with open(runs_dir / name / "predictions_pooled.csv", newline="") as fh:
        predictions = {r["path"]: r for r in csv.DictReader(fh)}
    return per_target(predictions), predictions | {"_seconds": summary["seconds"]}


# candidates of the nested selection (bench/PROTOCOLS.md, 23:00): silence trimming x layers x regularisation
CANDIDATES = {f"{t}_{l}_wd{w}": [f"features.params.trim_db={t[1:] if t != 'notrim' else 'null'}",
                                 f"features.params.layers={layers}", f"training.weight_decay={w}"]
              for t in ("notrim", "t30") for l, layers in (("Lall", "all"), ("L123", "[1, 2, 3]"), ("L2", "[2]"))
              for w in (0.05, 0.2, 0.8)}


def select(config: str, condition: str, manifest: Path, runs_dir: Path, cache_dir: Path, overrides: list[str],
           target: str | None) -> tuple[str, float]:
    """The candidate with the best mean UAR over inner leave-one-corpus-out folds of the corpora other than
    ``target`` (all three when ``target`` is None); returns ``(candidate, its inner UAR)``.

    The inner fits are the recipe's model (multinomial logistic regression with balanced class weights and
    L2 = weight_decay, which emodet's L-BFGS head equals: tests/test_training.py) fitted by scikit-learn on the
    cached features, for speed; the outer figure of the chosen candidate runs through emodet itself."""
    from sklearn.linear_model import LogisticRegression

    rows = [r for r in rows_of(manifest) if target is None or r["corpus"] != target]
    corpora = sorted({r["corpus"] for r in rows})
    y = np.array([LABELS.index(r["label"]) for r in rows])
    scores = {}
    for name, extra in CANDIDATES.items():
        cfg = load_config(REPO / "configs" / f"{config}.yaml", [f"features.cache_dir={cache_dir}", *overrides, *extra])
        f = cfg.features
        cache = FeatureCache(f.cache_dir, f.type, f.params, sr=cfg.data.sample_rate)
        x = np.stack([cache.load(*locate(r["path"], None, manifest))[:, 0] for r in rows]).astype(np.float64)
        uars = []
        for held in corpora:
            test = np.array([r["corpus"] == held for r in rows])
            z = _normalised(x, rows, test, CONDITIONS[condition])
            n = int((~test).sum())
            lr = LogisticRegression(C=1 / (cfg.training.weight_decay * n), class_weight="balanced", max_iter=3000)
            lr.fit(z[~test], y[~test])
            uars.append(classification_metrics(y[test], lr.predict(z[test]), LABELS)["uar"])
        scores[name] = float(np.mean(uars))
    best = max(scores, key=scores.get)
    log = runs_dir / "selection.jsonl"
    with open(log, "a") as fh:
        fh.write(json.dumps({"config": config, "condition": condition, "without": target, "scores": scores,
                             "chosen": best}) + "\n")
    return best, scores[best]


def _normalised(x: np.ndarray, rows: list[dict], test: np.ndarray, mode: str) -> np.ndarray:
    """z-scores as emodet's normaliser gives them: training rows' statistics (global) or each corpus's own."""
    if mode == "global":
        mean, std = x[~test].mean(0), np.maximum(x[~test].std(0), 1e-5)
        return (x - mean) / std
    z = np.empty_like(x)
    for corpus in {r["corpus"] for r in rows}:
        idx = np.array([r["corpus"] == corpus for r in rows])
        z[idx] = (x[idx] - x[idx].mean(0)) / np.maximum(x[idx].std(0), 1e-5)
    return z


def per_target(predictions: dict[str, dict]) -> dict[str, float]:
    out = {}
    for target in CORPORA:
        rows = [r for p, r in predictions.items() if not p.startswith("_") and r["speaker"].startswith(target + ":")]
        out[target] = classification_metrics([LABELS.index(r["label"]) for r in rows],
                                             [LABELS.index(r["predicted"]) for r in rows], LABELS)["uar"]
    return out


def fuse(members: list[dict[str, dict]]) -> dict[str, float]:
    paths = sorted(p for p in members[0] if not p.startswith("_"))
    probs = fuse_probabilities([[[float(m[p][f"p_{lab}"]) for lab in LABELS] for p in paths] for m in members])
    fused = {p: {**members[0][p], "predicted": LABELS[int(k)]} for p, k in zip(paths, probs.argmax(1))}
    return per_target(fused)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="*", default=["encoder_whisper_linear"], help="configs/NAME.yaml to run")
    ap.add_argument("--fuse", nargs="*", default=[], help="late fusions of configs run here, e.g. a+b")
    ap.add_argument("--runs-dir", type=Path, default=Path("runs") / "bench_cross_corpus")
    ap.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "emodet-bench")
    ap.add_argument("--set", action="append", default=[], dest="overrides", help="override for every config")
    ap.add_argument("--select", nargs="*", default=[], metavar="CONFIG",
                    help="configs whose trimming, layers and regularisation are chosen for each target corpus by "
                         "inner leave-one-corpus-out on its training corpora (CANDIDATES)")
    args = ap.parse_args()
    missing = [c for c in CORPORA if not (DATASETS / c).is_dir()]
    if missing:
        print(f"corpora not found: {', '.join(missing)} (in {DATASETS}); this benchmark needs all three")
        return 0
    manifest = build_manifest(args.runs_dir)
    print(f"manifest {manifest}: {len(rows_of(manifest))} recordings of {', '.join(LABELS)}")
    table, predictions = {}, {}
    for config in dict.fromkeys([*args.configs, *(m for f in args.fuse for m in f.split("+"))]):
        for condition in CONDITIONS:
            t0 = time.perf_counter()
            table[(config, condition)], predictions[(config, condition)] = run_system(
                config, condition, manifest, args.runs_dir, args.cache_dir, args.overrides)
            print(f"{config} ({condition}): " + ", ".join(f"{k} {v:.3f}" for k, v in table[(config, condition)].items())
                  + f"  [{time.perf_counter() - t0:.0f} s]", flush=True)
    for config in args.select:
        for condition in CONDITIONS:
            chosen, values = {}, {}
            for target in CORPORA:
                name, inner = select(config, condition, manifest, args.runs_dir, args.cache_dir, args.overrides, target)
                outer, _ = run_system(config, condition, manifest, args.runs_dir / "selected", args.cache_dir,
                                      [*args.overrides, *CANDIDATES[name]], suffix=f"_{name}")
                chosen[target], values[target] = f"{name} (inner {inner:.3f})", outer[target]
                print(f"{config} [{condition}] for {target}: chose {chosen[target]} -> {outer[target]:.3f}", flush=True)
            table[(f"{config} selected", condition)] = values
            everywhere, inner = select(config, condition, manifest, args.runs_dir, args.cache_dir, args.overrides, None)
            print(f"{config} [{condition}] over all three corpora: {everywhere} (inner {inner:.3f})", flush=True)
    for spec in args.fuse:
        for condition in CONDITIONS:
            table[(f"fusion {spec}", condition)] = fuse([predictions[(m, condition)] for m in spec.split("+")])
    ref = reference(manifest, args.cache_dir)
    print("\nleave one corpus out, 4 classes, pooled UAR on the held-out corpus (chance 0.25)")
    width = max(44, *(len(k[0]) + 12 for k in table))
    print(f"{'system':<{width}}" + "".join(f"{c:>9}" for c in CORPORA) + f"{'mean':>9}")
    rows = [(f"{name} [{cond}]", v) for (name, cond), v in table.items()]
    rows += [(f"eGeMAPS + linear SVM, reference [{mode}]", v) for mode, v in ref.items()]
    for name, values in rows:
        print(f"{name:<{width}}" + "".join(f"{values[c]:>9.3f}" for c in CORPORA)
              + f"{np.mean([values[c] for c in CORPORA]):>9.3f}")
    (args.runs_dir / "cross_corpus.json").write_text(json.dumps(
        {"rows": {n: v for n, v in rows}, "labels": LABELS, "corpora": CORPORA}, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except EmodetError as exc:
        sys.exit(f"{Path(__file__).name}: error: {exc}")
