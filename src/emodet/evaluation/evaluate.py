"""Evaluate a run or an ensemble on manifest rows: metrics JSON, predictions CSV, confusion PNG."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from ..data.cache import FeatureCache
from ..core.errors import UsageError
from ..core.io import atomic_write_csv, atomic_write_json
from .metrics import classification_metrics
from .predict import predict_rows
from .plots import plot_confusion, plot_reliability


def write_predictions(path: Path, rows: list[dict], logits: torch.Tensor, labels: list[str]) -> None:
    """One row a recording: path, speaker, true label, predicted label, probability of each label."""
    probs = torch.softmax(logits.float(), dim=1).numpy()
    out = []
    for row, p in zip(rows, probs):
        item = {"path": row["path"], "speaker": row["speaker"], "label": row["label"], "predicted": labels[int(p.argmax())]}
        item.update({f"p_{lab}": round(float(v), 6) for lab, v in zip(labels, p)})
        out.append(item)
    atomic_write_csv(path, out, ["path", "speaker", "label", "predicted"] + [f"p_{lab}" for lab in labels])


def metrics_for(rows: list[dict], logits: torch.Tensor, labels: list[str]) -> dict:
    index = {lab: i for i, lab in enumerate(labels)}
    targets = np.array([index[r["label"]] for r in rows])
    m = classification_metrics(targets, logits.argmax(1).numpy(), labels)
    m["speakers"] = sorted({r["speaker"] for r in rows})
    return m


def evaluate_directory(run_dir: str | Path, manifest: str | Path | None = None, split: str = "test",
                       data_root: str | Path | None = None, out: str | Path | None = None,
                       refuse_seen_speakers: bool = False) -> dict:
    """Evaluate a run or ensemble directory on ``split`` of a manifest (default: the run's own).

    Writes ``eval_<split>.json`` (the run's own manifest) or ``eval_<manifest name>_<split>.json``
    (another one), with its predictions CSV and confusion PNG, into the run directory, or to ``out``
    (a ``.json`` path; the CSV and PNG beside it). Speakers the model saw in training are named in the
    result (``seen_speakers``) with a warning: such figures are not speaker-independent;
    ``refuse_seen_speakers`` makes that an error instead.
    """
    from ..data.manifest import read_manifest
    from ..runs import load_predictor, load_run, training_speakers

    run_dir = Path(run_dir)
    info = load_run(run_dir)
    manifest_path = Path(manifest) if manifest else info.manifest
    if manifest and not manifest_path.is_file():
        raise UsageError(f"--manifest {manifest_path}: file not found")
    if not manifest_path.is_file():
        raise UsageError(f"{run_dir}: no manifest to evaluate on; pass --manifest M")
    rows = read_manifest(manifest_path)
    root = Path(data_root) if data_root else (info.data_root if not manifest else None)
    if split != "all":
        if not any(r.get("split") for r in rows):
            raise UsageError(f"manifest {manifest_path} has no split column; pass --split all or write one with "
                             "`emodet data split`")
        rows = [r for r in rows if r.get("split") == split]
    if not rows:
        raise UsageError(f"manifest {manifest_path}: no rows in split {split!r}"
                         + (" (this run trained on every speaker: it has no test split; evaluate it on another "
                            "manifest with --manifest M)" if split == "test" and not manifest else ""))
    unknown = sorted({r["label"] for r in rows} - set(info.labels))
    if unknown:
        raise UsageError(f"manifest {manifest_path}: label {unknown[0]!r} is not one the model knows "
                         f"({', '.join(info.labels)})")
    seen = sorted({r["speaker"] for r in rows} & training_speakers(run_dir))
    if seen and refuse_seen_speakers:
        raise UsageError(f"{run_dir}: evaluation speakers {', '.join(seen)} were seen in training by the model "
                         "(or a member of the ensemble); speaker-independent evaluation needs members trained on "
                         "the same split")
    if seen:
        warnings.warn(f"speakers {', '.join(seen)} were seen in training: these figures are not speaker-independent",
                      SeenSpeakersWarning, stacklevel=2)
    model = load_predictor(run_dir)
    cache = FeatureCache(info.cache_dir, info.feature, info.feature_params, sr=info.sample_rate)
    logits = predict_rows(model, rows, root, manifest_path, info.labels, cache, info.normalizer)
    metrics = metrics_for(rows, logits, info.labels)
    metrics.update({"split": split, "manifest": str(manifest_path), "normalize": info.normalize,
                    "whiten": info.normalizer.get("whiten", "none"), "seen_speakers": seen})
    metrics["calibration"] = _judge_temperature(logits.numpy(), metrics_targets(rows, info.labels),
                                                float(info.metrics.get("calibration", {}).get("temperature", 1.0)))
    json_path = Path(out) if out else run_dir / (f"eval_{split}.json" if not manifest
                                                  else f"eval_{Path(manifest).stem}_{split}.json")
    stem = json_path.with_suffix("")
    atomic_write_json(json_path, metrics)
    write_predictions(stem.with_name(stem.name + "_predictions.csv"), rows, logits, info.labels)
    plot_confusion(metrics["confusion_matrix"], info.labels, stem.with_name(stem.name + "_confusion_matrix.png"),
                   f"{run_dir.name} on {Path(manifest_path).name} ({split}): UAR {metrics['uar']:.3f}")
    plot_reliability(metrics["calibration"], stem.with_name(stem.name + "_reliability.png"),
                     f"{run_dir.name} on {Path(manifest_path).name} ({split})")
    metrics["written"] = str(json_path)
    return metrics


def metrics_targets(rows: list[dict], labels: list[str]) -> np.ndarray:
    index = {lab: i for i, lab in enumerate(labels)}
    return np.array([index[r["label"]] for r in rows])


def _judge_temperature(logits: np.ndarray, targets: np.ndarray, temperature: float) -> dict:
    """ECE and Brier score of the raw probabilities and of those the run's temperature gives, with reliability."""
    from ..core.fusion import softmax
    from .calibration import brier, coverage_curve, ece, reliability

    before, after = softmax(logits), softmax(logits / temperature)
    return {"temperature": temperature, "ece_before": ece(before, targets), "ece_after": ece(after, targets),
            "brier_before": brier(before, targets), "brier_after": brier(after, targets),
            "reliability_before": reliability(before, targets), "reliability_after": reliability(after, targets),
            "coverage": coverage_curve(after, targets)}


def calibrate_run(run_dir: str | Path, from_cv: str | Path | None = None, manifest: str | Path | None = None,
                  split: str = "all", data_root: str | Path | None = None) -> dict:
    """Fit a run's temperature on held-out predictions and store it in its metrics.json (``calibration``):
    a cross-validation's pooled predictions of the same recipe (``from_cv``), or the run's predictions on
    ``manifest`` (recordings it never trained on). Exports made after it carry the temperature."""
    import csv
    import json

    from .calibration import calibration_report

    run_dir = Path(run_dir)
    info_path = run_dir / "metrics.json"
    if not info_path.is_file():
        raise UsageError(f"{run_dir} is not a finished run directory (no metrics.json)")
    metrics = json.loads(info_path.read_text())
    labels = metrics["labels"]
    if from_cv is not None:
        pooled = Path(from_cv) / "predictions_pooled.csv"
        if not pooled.is_file():
            raise UsageError(f"--from {from_cv}: not a finished cross-validation (no predictions_pooled.csv)")
        with open(pooled, newline="") as fh:
            rows = list(csv.DictReader(fh))
        missing = [lab for lab in labels if f"p_{lab}" not in rows[0]]
        if missing:
            raise UsageError(f"--from {from_cv}: its labels differ from the run's (no {missing[0]!r})")
        logits = np.log(np.clip([[float(r[f"p_{lab}"]) for lab in labels] for r in rows], 1e-12, None))
        report = calibration_report(logits, metrics_targets(rows, labels), fitted_on=f"cross-validation {from_cv}")
    elif manifest is not None:
        evaluated = evaluate_directory(run_dir, manifest, split, data_root, out=run_dir / "calibration_set.json")
        with open(run_dir / "calibration_set_predictions.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        logits = np.log(np.clip([[float(r[f"p_{lab}"]) for lab in labels] for r in rows], 1e-12, None))
        report = calibration_report(logits, metrics_targets(rows, labels), fitted_on=f"manifest {manifest} ({split}, "
                                    f"{evaluated['n']} recordings)")
    else:
        raise UsageError("emodet calibrate needs --from CV_DIR (a cross-validation of the same recipe) or "
                         "--manifest M (recordings the run never trained on)")
    metrics["calibration"] = report
    atomic_write_json(info_path, metrics)
    return report


class SeenSpeakersWarning(UserWarning):
    """Evaluation on speakers a model saw in training: the figures are not speaker-independent."""
