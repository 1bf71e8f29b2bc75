"""Speaker-independent cross-validation: one model per fold, the fold's speakers held out.

``run_cv(cfg, "loso" | k, name)`` writes ``runs/<name>/fold_NN/`` (each a complete run
directory, its validation speakers drawn from the fold's training speakers) and
``runs/<name>/cv_summary.json``: per-fold metrics with held-out and validation speakers,
``uar_mean``/``uar_std`` (over folds), and ``pooled`` metrics over all held-out predictions.
Finished folds are never retrained; a fold cut short resumes from its last checkpoint.
"""

from __future__ import annotations

import copy
import csv
import json
import time
from pathlib import Path

import numpy as np

from .config import check_data_root, with_defaults
from .data.corpora import prepare_corpus
from .data.labels import load_label_map
from .data.manifest import read_manifest, write_manifest
from .data.splits import loso_folds, speaker_folds, speaker_independent_split
from .errors import UsageError
from .evaluation.metrics import metrics_from_confusion
from .experiment import run_experiment
from .io import atomic_write_json


def fold_assignment(rows: list[dict], folds: str | int, seed: int) -> dict[str, int]:
    """``{speaker: fold}`` for ``"loso"`` or ``k`` folds by speaker."""
    if str(folds).lower() == "loso":
        return loso_folds(rows)
    try:
        k = int(folds)
    except (TypeError, ValueError):
        raise UsageError(f"--folds {folds!r}: give 'loso' or a number of folds >= 2") from None
    return speaker_folds(rows, k, seed)


def fold_manifest_rows(rows: list[dict], held_out: set[str], val: float, seed: int) -> list[dict]:
    """Rows with ``split``: ``test`` for the held-out speakers; ``val`` speakers drawn from the rest."""
    rest = [r for r in rows if r["speaker"] not in held_out]
    n_rest = len({r["speaker"] for r in rest})
    if n_rest < (2 if val else 1):
        raise UsageError(f"a fold needs at least 2 training speakers (one for validation) or data.split.val: 0; "
                         f"this one has {n_rest}")
    split = speaker_independent_split(rest, val=val, test=0, seed=seed)
    out = []
    for r in rows:
        out.append({**r, "split": "test" if r["speaker"] in held_out else split[r["speaker"]]})
    return out


def run_cv(cfg: dict, folds: str | int, name: str, runs_dir: str | Path = "runs", progress: bool | None = None,
           new_name_hint: str = "choose a new --run-name") -> dict:
    """Cross-validate ``cfg``; returns the summary (also written to ``cv_summary.json``).
    ``new_name_hint``: how the caller's user starts a fresh cross-validation (said when ``name`` holds another recipe)."""
    root = check_data_root(cfg)
    d = cfg["data"]
    cv_dir = Path(runs_dir) / name
    _check_same_recipe(cv_dir, cfg, folds, new_name_hint)
    cv_dir.mkdir(parents=True, exist_ok=True)
    if not (cv_dir / "cv_config.json").exists():
        atomic_write_json(cv_dir / "cv_config.json", {"folds": str(folds), "recipe": _recipe(cfg)})
    manifest = cv_dir / "manifest.csv"
    if manifest.exists():
        rows = read_manifest(manifest)
    elif d["manifest"]:
        rows = read_manifest(d["manifest"])
    else:
        result = prepare_corpus(d["corpus"], root, load_label_map(d["label_map"]), None, d["speaker_pattern"])
        if not result.rows:
            raise UsageError(f"data.root {root}: no file parsed as corpus {result.corpus!r}; set data.corpus")
        rows = result.rows
    if d["labels"]:
        rows = [r for r in rows if r["label"] in d["labels"]]
    assignment = fold_assignment(rows, folds, d["split"]["seed"])
    for r in rows:
        r["cv_fold"] = assignment[r["speaker"]]
    write_manifest(manifest, rows)
    n_folds = max(assignment.values()) + 1
    val = d["split"]["val"]  # 0: every non-held-out speaker trains (fixed-epoch recipes; run_experiment checks)
    fold_results, pooled_cm = [], None
    labels = None
    t0 = time.perf_counter()
    for k in range(n_folds):
        held_out = {s for s, f in assignment.items() if f == k}
        fold_name = f"fold_{k:02d}"
        fold_dir = cv_dir / fold_name
        print(f"fold {k + 1}/{n_folds}: held out {', '.join(sorted(held_out))}", flush=True)
        if not (fold_dir / "metrics.json").exists():
            fold_rows = fold_manifest_rows(rows, held_out, val, d["split"]["seed"] + k)
            fold_dir.mkdir(parents=True, exist_ok=True)
            fold_manifest = fold_dir / "fold_manifest.csv"
            write_manifest(fold_manifest, fold_rows)
            fold_cfg = copy.deepcopy(cfg)
            fold_cfg["data"]["manifest"] = str(fold_manifest.resolve())
            fold_cfg["data"]["split"]["method"] = "manifest"
            resume = (fold_dir / "checkpoints" / "last.pt").exists()
            run_experiment(fold_cfg, fold_name, cv_dir, resume=resume, progress=progress)
        m = json.loads((fold_dir / "metrics.json").read_text())
        labels = m["labels"]
        cm = np.array(m["confusion_matrix"])
        pooled_cm = cm if pooled_cm is None else pooled_cm + cm
        val_speakers = m["val"]["speakers"] if "val" in m else []  # none with data.split.val: 0
        fold_results.append({"fold": k, "held_out_speakers": sorted(held_out), "val_speakers": val_speakers,
                             "uar": m["uar"], "wa": m["wa"], "macro_f1": m["macro_f1"], "n": m["test"]["n"],
                             "best_epoch": m["best_epoch"]})
        print(f"fold {k + 1}/{n_folds}: UAR {m['uar']:.3f}  WA {m['wa']:.3f}  (validation: "
              f"{', '.join(val_speakers) or 'none'})", flush=True)
    uars = np.array([f["uar"] for f in fold_results])
    summary = {
        "name": name, "folds_spec": str(folds), "n_folds": n_folds, "folds": fold_results,
        "uar_mean": float(uars.mean()), "uar_std": float(uars.std(ddof=0)),
        "wa_mean": float(np.mean([f["wa"] for f in fold_results])),
        "macro_f1_mean": float(np.mean([f["macro_f1"] for f in fold_results])),
        "pooled": metrics_from_confusion(pooled_cm, labels),
        "normalize": cfg["data"]["normalize"], "seconds": round(time.perf_counter() - t0, 1),
    }
    atomic_write_json(cv_dir / "cv_summary.json", summary)
    _write_pooled_predictions(cv_dir, n_folds)
    return summary


# Keys that may change between a cut cross-validation and its rerun (where things are, how fast).
_RUN_LOCAL = {("data", "root"), ("data", "manifest"), ("data", "num_workers"), ("features", "cache_dir"),
              ("training", "device")}


def _recipe(cfg: dict) -> dict:
    return {sec: {k: v for k, v in cfg[sec].items() if (sec, k) not in _RUN_LOCAL} for sec in cfg}


def _check_same_recipe(cv_dir: Path, cfg: dict, folds, new_name_hint: str) -> None:
    """A rerun continues only the cross-validation it started: finished folds are reused, so a changed
    config would silently mix two recipes in one summary."""
    path = cv_dir / "cv_config.json"
    if not path.exists():
        return
    saved = json.loads(path.read_text())
    # an option emodet gained after the cross-validation started is absent from its saved recipe: it ran
    # with that option's default, so a rerun at the default continues it
    saved["recipe"] = json.loads(json.dumps(_recipe(with_defaults(saved["recipe"], str(path)))))
    now = json.loads(json.dumps({"folds": str(folds), "recipe": _recipe(cfg)}))
    if saved == now:
        return
    diff = [f"--folds ({saved['folds']} before)"] if saved["folds"] != now["folds"] else []
    for sec in sorted(set(saved["recipe"]) | set(now["recipe"])):
        old, new = saved["recipe"].get(sec, {}), now["recipe"].get(sec, {})
        diff += [f"{sec}.{k}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    raise UsageError(f"{cv_dir} holds a cross-validation of another recipe ({', '.join(diff)} differ); "
                     f"rerun with its config to resume it, or {new_name_hint}")


def _write_pooled_predictions(cv_dir: Path, n_folds: int) -> None:
    rows = []
    for k in range(n_folds):
        path = cv_dir / f"fold_{k:02d}" / "predictions_test.csv"
        if path.exists():
            with open(path, newline="") as fh:
                rows += [{**r, "fold": k} for r in csv.DictReader(fh)]
    if rows:
        from .io import atomic_write_csv

        atomic_write_csv(cv_dir / "predictions_pooled.csv", rows, list(rows[0].keys()))
