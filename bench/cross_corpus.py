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

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' shared selection
from _selection import choose, grid  # noqa: E402

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


STAGE3 = dict(trim=[("t30", ["features.params.trim_db=30"])],
              pooling=[(p, [f"features.params.pooling={p}"]) for p in ("meanstd", "mean")],
              layers=[("L123", ["features.params.layers=[1, 2, 3]"]), ("Lall", ["features.params.layers=all"])],
              wd=[(f"wd{w}", [f"training.weight_decay={w}"]) for w in (0.2, 0.8)],
              nap=[(f"nap{k}", [f"data.nap={k}"]) for k in (0, 16)])

# the nested selections' candidates (bench/PROTOCOLS.md: first stage 23:00, second stage 23:55)
GRIDS = {
    "stage1": grid(trim=[("notrim", ["features.params.trim_db=null"]), ("t30", ["features.params.trim_db=30"])],
                   layers=[("Lall", ["features.params.layers=all"]), ("L123", ["features.params.layers=[1, 2, 3]"]),
                           ("L2", ["features.params.layers=[2]"])],
                   wd=[(f"wd{w}", [f"training.weight_decay={w}"]) for w in (0.05, 0.2, 0.8)]),
    "stage2": grid(trim=[("t30", ["features.params.trim_db=30"])],
                   layers=[("L123", ["features.params.layers=[1, 2, 3]"]), ("Lall", ["features.params.layers=all"])],
                   wd=[(f"wd{w}", [f"training.weight_decay={w}"]) for w in (0.2, 0.8)],
                   nap=[(f"nap{k}", [f"data.nap={k}"]) for k in (0, 8, 16, 32)],
                   aug=[("aug0", ["training.augment.waveform.copies=0"]), ("aug2", ["training.augment.waveform.copies=2"])]),
    # third stage (bench/PROTOCOLS.md, 2026-12-02 10:31): pooling, never varied before
    "stage3": grid(**STAGE3),
    # fourth stage (bench/PROTOCOLS.md, 2026-12-07 19:36): stage 3 x per-corpus whitening (the corpus condition)
    "stage4": grid(**STAGE3, whiten=[("w0", ["data.whiten=none"]), ("w1", ["data.whiten=ledoit-wolf"])]),
    # fifth stage (bench/PROTOCOLS.md, 2026-12-07 19:44): stage 3 x whitening with CORAL's regularisation
    "stage5": grid(**STAGE3, whiten=[("w0", ["data.whiten=none"]), ("coral", ["data.whiten=coral"])]),
}


def select(config: str, condition: str, manifest: Path, runs_dir: Path, cache_dir: Path, overrides: list[str],
           target: str | None, grid_name: str) -> tuple[str, float]:
    """The candidate of ``GRIDS[grid_name]`` with the best mean UAR over inner leave-one-corpus-out folds of
    the corpora other than ``target`` (all three when ``target`` is None); returns ``(candidate, its inner
    UAR)``. The inner fits: bench/_selection.py."""
    rows = [r for r in rows_of(manifest) if target is None or r["corpus"] != target]
    cfgs = {name: load_config(REPO / "configs" / f"{config}.yaml", [f"features.cache_dir={cache_dir}", *overrides, *extra])
            for name, extra in GRIDS[grid_name].items()}
    chosen, scores = choose(cfgs, rows, LABELS, "corpus", CONDITIONS[condition], None, manifest, runs_dir,
                            {"grid": grid_name, "config": config, "condition": condition, "without": target})
    return chosen, scores[chosen]


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
                    help="configs whose settings are chosen for each target corpus by inner leave-one-corpus-out on "
                         "its training corpora, among the candidates of --grid")
    ap.add_argument("--grid", default="stage2", choices=sorted(GRIDS), help="the candidates of --select")
    ap.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS),
                    help="the conditions to run (default: all)")
    args = ap.parse_args()
    if args.grid in ("stage4", "stage5") and "none" in args.conditions:
        ap.error(f"--grid {args.grid} varies per-corpus whitening, which needs the corpus condition: --conditions corpus")
    missing = [c for c in CORPORA if not (DATASETS / c).is_dir()]
    if missing:
        print(f"corpora not found: {', '.join(missing)} (in {DATASETS}); this benchmark needs all three")
        return 0
    manifest = build_manifest(args.runs_dir)
    print(f"manifest {manifest}: {len(rows_of(manifest))} recordings of {', '.join(LABELS)}")
    table, predictions = {}, {}
    for config in dict.fromkeys([*args.configs, *(m for f in args.fuse for m in f.split("+"))]):
        for condition in args.conditions:
            t0 = time.perf_counter()
            table[(config, condition)], predictions[(config, condition)] = run_system(
                config, condition, manifest, args.runs_dir, args.cache_dir, args.overrides)
            print(f"{config} ({condition}): " + ", ".join(f"{k} {v:.3f}" for k, v in table[(config, condition)].items())
                  + f"  [{time.perf_counter() - t0:.0f} s]", flush=True)
    for config in args.select:
        for condition in args.conditions:
            chosen, values = {}, {}
            for target in CORPORA:
                name, inner = select(config, condition, manifest, args.runs_dir, args.cache_dir, args.overrides, target,
                                     args.grid)
                outer, _ = run_system(config, condition, manifest, args.runs_dir / "selected", args.cache_dir,
                                      [*args.overrides, *GRIDS[args.grid][name]], suffix=f"_{name}")
                chosen[target], values[target] = f"{name} (inner {inner:.3f})", outer[target]
                print(f"{config} [{condition}] for {target}: chose {chosen[target]} -> {outer[target]:.3f}", flush=True)
            table[(f"{config} selected ({args.grid})", condition)] = values
            everywhere, inner = select(config, condition, manifest, args.runs_dir, args.cache_dir, args.overrides, None,
                                       args.grid)
            print(f"{config} [{condition}] over all three corpora: {everywhere} (inner {inner:.3f})", flush=True)
    for spec in args.fuse:
        for condition in args.conditions:
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
    out = args.runs_dir / "cross_corpus.json"  # rows of earlier runs (other configs) kept beside these
    earlier = json.loads(out.read_text())["rows"] if out.is_file() else {}
    out.write_text(json.dumps({"rows": {**earlier, **dict(rows)}, "labels": LABELS, "corpora": CORPORA}, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except EmodetError as exc:
        sys.exit(f"{Path(__file__).name}: error: {exc}")
