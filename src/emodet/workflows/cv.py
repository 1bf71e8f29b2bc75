"""Speaker-independent cross-validation: one model per fold, the fold's speakers (or corpus) held out.

``run_cv(cfg, "loso" | "corpus" | k, name)`` writes ``runs/<name>/fold_NN/`` (each a complete run
directory, its validation speakers drawn from the fold's training speakers), ``cv_summary.json``
(per-fold metrics with held-out and validation speakers, ``uar_mean``/``uar_std`` over folds,
``pooled`` metrics over all held-out predictions, ``per_speaker`` UAR), ``predictions_pooled.csv``,
``confusion_matrix.png`` (pooled) and ``per_speaker_uar.png``. Finished folds are never retrained; a
fold cut short resumes from its last checkpoint; a rerun with another recipe is refused.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np

from ..config import Config, Section, check_data_root, check_training_start, config_differences
from ..models import check_model_features
from ..core.errors import UsageError
from ..core.io import atomic_write_csv, atomic_write_json
from ..data.manifest import read_manifest, rebase_rows, write_manifest
from ..data.prepare import load_rows
from ..data.splits import corpus_folds, loso_folds, speaker_folds, speaker_independent_split
from ..evaluation.metrics import metrics_from_confusion, per_group_uar
from ..evaluation.plots import plot_confusion, plot_group_bars
from .experiment import removed_if_start_fails, run_experiment

log = logging.getLogger(__name__)

# Keys that may change between a cut cross-validation and its rerun (where things are, how fast).
RUN_LOCAL = frozenset({"data.root", "data.manifest", "data.num_workers", "features.cache_dir", "training.device"})


def fold_assignment(rows: list[dict], folds: str | int, seed: int, val: float) -> dict[str, int]:
    """``{speaker: fold}`` for ``"loso"``, ``"corpus"`` (leave one corpus out) or ``k`` folds by speaker."""
    speakers = sorted({r["speaker"] for r in rows})
    need = 3 if val else 2  # a fold trains on the others: one of them validates unless data.split.val is 0
    if str(folds).lower() != "corpus" and len(speakers) < need:
        fixed = ("" if not val else "; with 2 speakers, train a fixed number of epochs on one and test on the other: "
                 "--set data.split.val=0 --set training.early_stopping.select=last "
                 "--set training.early_stopping.patience=0")
        raise UsageError(f"cross-validation by speaker needs at least {need} speakers (one held out, one training"
                         f"{', one validating' if val else ''}); the data has {len(speakers)} "
                         f"({', '.join(speakers[:5])}){fixed}. With one speaker no speaker-independent figure exists: "
                         "record more speakers")
    if str(folds).lower() == "loso":
        return loso_folds(rows)
    if str(folds).lower() == "corpus":
        return corpus_folds(rows)
    try:
        k = int(folds)
    except (TypeError, ValueError):
        raise UsageError(f"--folds {folds!r}: give 'loso', 'corpus' or a number of folds >= 2") from None
    return speaker_folds(rows, k, seed)


def fold_manifest_rows(rows: list[dict], held_out: set[str], val: float, seed: int) -> list[dict]:
    """Rows with ``split``: ``test`` for the held-out speakers; ``val`` speakers drawn from the rest."""
    rest = [r for r in rows if r["speaker"] not in held_out]
    n_rest = len({r["speaker"] for r in rest})
    if n_rest < (2 if val else 1):
        raise UsageError(f"a fold needs at least 2 training speakers (one for validation) or data.split.val: 0; "
                         f"this one has {n_rest}")
    split = speaker_independent_split(rest, val=val, test=0, seed=seed)
    return [{**r, "split": "test" if r["speaker"] in held_out else split[r["speaker"]]} for r in rows]


def run_cv(cfg: Config, folds: str | int, name: str, runs_dir: str | Path = "runs", progress: bool | None = None,
           new_name_hint: str = "choose a new --run-name") -> dict:
    """Cross-validate ``cfg``; returns the summary (also written to ``cv_summary.json``).
    ``new_name_hint``: how the caller's user starts a fresh cross-validation (said when ``name`` holds another recipe)."""
    cv_dir = Path(runs_dir) / name
    _check_same_recipe(cv_dir, cfg, folds, new_name_hint)
    manifest = cv_dir / "manifest.csv"
    # without a data root, paths are relative to the manifest that holds them: rewritten as they move
    by_manifest = check_data_root(cfg) is None
    check_training_start(cfg)
    check_model_features(cfg.model.name, cfg.model.preset, cfg.model.params, cfg.features.type, cfg.features.params,
                         cfg.data.normalize)
    rows, source = (read_manifest(manifest), manifest) if manifest.exists() else load_rows(cfg)[:2]
    if by_manifest:
        rows = rebase_rows(rows, source, manifest)
    if cfg.data.labels:
        rows = [r for r in rows if r["label"] in cfg.data.labels]
    val = cfg.data.split.val  # 0: every non-held-out speaker trains (fixed-epoch recipes; run_experiment checks)
    assignment = fold_assignment(rows, folds, cfg.data.split.seed, val)  # refused before anything is written
    # a first fold refused at its start (a value only a fold can check, Ctrl-C) leaves nothing to resume:
    # no folder is left to block the corrected rerun under the same name
    def resumable() -> bool:
        return any(cv_dir.glob("fold_*/metrics.json")) or any(cv_dir.glob("fold_*/checkpoints/*.pt"))

    with removed_if_start_fails(cv_dir, True, keep=resumable):
        cv_dir.mkdir(parents=True, exist_ok=True)
        return _run_folds(cfg, folds, name, cv_dir, rows, assignment, val, progress, manifest if by_manifest else None)


def _run_folds(cfg: Config, folds, name: str, cv_dir: Path, rows: list[dict], assignment: dict, val: float, progress,
               source: Path | None) -> dict:
    manifest = cv_dir / "manifest.csv"
    if not (cv_dir / "cv_config.json").exists():
        atomic_write_json(cv_dir / "cv_config.json", {"folds": str(folds), "recipe": _recipe(cfg)})
    for r in rows:
        r["cv_fold"] = assignment[r["speaker"]]
    write_manifest(manifest, rows)
    n_folds = max(assignment.values()) + 1
    fold_results, pooled_cm, labels, t0 = [], None, None, time.perf_counter()
    earlier = cv_dir / "cv_summary.json"  # a rerun that reuses finished folds adds its time to theirs
    reused_seconds = json.loads(earlier.read_text()).get("seconds", 0.0) if earlier.exists() else 0.0
    for k in range(n_folds):
        held_out = {s for s, f in assignment.items() if f == k}
        fold_dir = cv_dir / f"fold_{k:02d}"
        log.info("fold %d/%d (%s): held out %s", k + 1, n_folds, fold_dir.name, ", ".join(sorted(held_out)))
        if not (fold_dir / "metrics.json").exists():
            _run_fold(cfg, rows, held_out, val, k, fold_dir, progress, source)
        m = json.loads((fold_dir / "metrics.json").read_text())
        labels = m["labels"]
        pooled_cm = np.array(m["confusion_matrix"]) + (0 if pooled_cm is None else pooled_cm)
        val_speakers = m["val"]["speakers"] if "val" in m else []  # none with data.split.val: 0
        fold_results.append({"fold": k, "held_out_speakers": sorted(held_out), "val_speakers": val_speakers,
                             "uar": m["uar"], "wa": m["wa"], "macro_f1": m["macro_f1"], "n": m["test"]["n"],
                             "best_epoch": m["best_epoch"]})
        log.info("fold %d/%d: UAR %.3f  WA %.3f  (validation: %s)", k + 1, n_folds, m["uar"], m["wa"],
                 ", ".join(val_speakers) or "none")
    predictions = _write_pooled_predictions(cv_dir, n_folds)
    uars = np.array([f["uar"] for f in fold_results])
    summary = {
        "name": name, "folds_spec": str(folds), "n_folds": n_folds, "folds": fold_results,
        "uar_mean": float(uars.mean()), "uar_std": float(uars.std(ddof=0)),
        "wa_mean": float(np.mean([f["wa"] for f in fold_results])),
        "macro_f1_mean": float(np.mean([f["macro_f1"] for f in fold_results])),
        "pooled": metrics_from_confusion(pooled_cm, labels),
        "per_speaker": per_group_uar(predictions, labels, "speaker"),
        "normalize": cfg.data.normalize, "seconds": round(reused_seconds + time.perf_counter() - t0, 1),
    }
    atomic_write_json(cv_dir / "cv_summary.json", summary)
    plot_confusion(pooled_cm, labels, cv_dir / "confusion_matrix.png",
                   f"{name}: pooled over {n_folds} folds, UAR {summary['pooled']['uar']:.3f}")
    plot_group_bars(summary["per_speaker"], cv_dir / "per_speaker_uar.png", "held-out speaker", "UAR",
                    f"{name}: UAR of each held-out speaker (chance {1 / len(labels):.2f})", chance=1 / len(labels))
    return summary


def _run_fold(cfg: Config, rows: list[dict], held_out: set[str], val: float, k: int, fold_dir: Path, progress,
              source: Path | None) -> None:
    fold_rows = fold_manifest_rows(rows, held_out, val, cfg.data.split.seed + k)
    fold_dir.mkdir(parents=True, exist_ok=True)
    fold_manifest = fold_dir / "fold_manifest.csv"
    write_manifest(fold_manifest, fold_rows, moved_from=source)
    fold_cfg = dataclasses.replace(cfg, data=dataclasses.replace(
        cfg.data, manifest=str(fold_manifest.resolve()), split=dataclasses.replace(cfg.data.split, method="manifest")))
    resume = (fold_dir / "checkpoints" / "last.pt").exists()
    run_experiment(fold_cfg, fold_dir.name, fold_dir.parent, resume=resume, progress=progress)


def _recipe(cfg: Config | dict) -> dict:
    plain = cfg.plain() if isinstance(cfg, Section) else cfg
    plain["data"]["split"].pop("method", None)  # cross-validation makes its own folds whatever the method says
    return {sec: {k: v for k, v in plain[sec].items() if f"{sec}.{k}" not in RUN_LOCAL} for sec in plain}


def _check_same_recipe(cv_dir: Path, cfg: Config, folds, new_name_hint: str) -> None:
    """A rerun continues only the cross-validation it started: finished folds are reused, so a changed
    config would silently mix two recipes in one summary."""
    path = cv_dir / "cv_config.json"
    if not path.exists():
        return
    saved = json.loads(path.read_text())
    # an option emodet gained after the cross-validation started is absent from its saved recipe: it ran
    # with that option's default, so a rerun at the default continues it
    old = _recipe(Config.from_mapping(saved["recipe"], str(path)))
    diff = [f"--folds ({saved['folds']} before)"] if saved["folds"] != str(folds) else []
    diff += config_differences(old, _recipe(cfg))
    if diff:
        verb = "differ" if len(diff) > 1 else "differs"
        raise UsageError(f"{cv_dir} holds a cross-validation of another recipe ({', '.join(diff)} {verb}); "
                         f"rerun with its config to resume it, or {new_name_hint}")


def _write_pooled_predictions(cv_dir: Path, n_folds: int) -> list[dict]:
    rows = []
    for k in range(n_folds):
        path = cv_dir / f"fold_{k:02d}" / "predictions_test.csv"
        if path.exists():
            with open(path, newline="") as fh:
                rows += [{**r, "fold": k} for r in csv.DictReader(fh)]
    if rows:
        atomic_write_csv(cv_dir / "predictions_pooled.csv", rows, list(rows[0].keys()))
    return rows
