"""Evaluate a run or an ensemble on manifest rows: metrics JSON, predictions CSV, confusion PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.cache import FeatureCache
from ..data.dataset import FeatureDataset, Normalizer, locate, pad_collate
from ..errors import UsageError
from ..io import atomic_write_csv, atomic_write_json
from .metrics import classification_metrics
from .report import plot_confusion


def predict_rows(model: torch.nn.Module, rows: list[dict], root, manifest_path, labels: list[str],
                 cache: FeatureCache, normalizer: dict, batch_size: int = 32) -> torch.Tensor:
    """Logits ``(N, C)`` of ``model`` for manifest ``rows`` (whole recordings, cached features).

    ``normalizer``: the run's saved normalisation (``{"mode": ...}``); ``speaker`` mode takes
    each speaker's statistics from the given rows of that speaker (their own recordings).
    """
    from torch.utils.data import DataLoader

    from ..training.loop import predict_logits

    for i, r in enumerate(rows):
        base, rel = locate(r["path"], root, manifest_path)
        if not (base / rel).is_file():
            raise UsageError(f"{manifest_path or 'manifest'}, row {i + 1}: file not found: {base / rel}")
    mode = normalizer.get("mode", "none")
    if mode == "speaker":
        norm = Normalizer.fit("speaker", rows, lambda r: cache.load(*locate(r["path"], root, manifest_path)))
    else:
        norm = Normalizer.from_dict(normalizer)
    ds = FeatureDataset(rows, root, cache, labels, normalizer=norm, manifest_path=manifest_path)
    device = next(model.parameters()).device
    logits, _ = predict_logits(model, DataLoader(ds, batch_size=batch_size, collate_fn=pad_collate), device)
    return logits


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
                       data_root: str | Path | None = None, out_prefix: str | None = None,
                       refuse_seen_speakers: bool = False) -> dict:
    """Evaluate a run or ensemble directory on ``split`` of a manifest (default: the run's own).

    Speakers the model saw in training are named in the result (``seen_speakers``) and a
    warning is printed: such figures are not speaker-independent. ``refuse_seen_speakers``
    makes that an error instead.
    """
    from ..data.manifest import read_manifest
    from ..ensemble import load_predictor, predictor_info, training_speakers

    run_dir = Path(run_dir)
    info = predictor_info(run_dir)
    manifest_path = Path(manifest) if manifest else info["manifest"]
    if manifest and not manifest_path.is_file():
        raise UsageError(f"--manifest {manifest_path}: file not found")
    if manifest_path is None or not Path(manifest_path).is_file():
        raise UsageError(f"{run_dir}: no manifest to evaluate on; pass --manifest M")
    rows = read_manifest(manifest_path)
    root = Path(data_root) if data_root else (info["data_root"] if not manifest else None)
    labels = info["labels"]
    if split != "all":
        if not any(r.get("split") for r in rows):
            raise UsageError(f"manifest {manifest_path} has no split column; pass --split all or write one with "
                             "`emodet data split`")
        rows = [r for r in rows if r.get("split") == split]
    if not rows:
        raise UsageError(f"manifest {manifest_path}: no rows in split {split!r}")
    unknown = sorted({r["label"] for r in rows} - set(labels))
    if unknown:
        raise UsageError(f"manifest {manifest_path}: label {unknown[0]!r} is not one the model knows "
                         f"({', '.join(labels)})")
    seen = sorted({r["speaker"] for r in rows} & training_speakers(run_dir))
    if seen and refuse_seen_speakers:
        raise UsageError(f"{run_dir}: evaluation speakers {', '.join(seen)} were seen in training by the model "
                         "(or a member of the ensemble); speaker-independent evaluation needs members trained on "
                         "the same split")
    if seen:
        print(f"warning: speakers {', '.join(seen)} were seen in training: these figures are not speaker-independent")
    model = load_predictor(run_dir)
    cache = FeatureCache(info["cache_dir"], info["feature"], info["feature_params"], sr=info["sample_rate"])
    logits = predict_rows(model, rows, root, manifest_path, labels, cache, info["normalizer"])
    metrics = metrics_for(rows, logits, labels)
    metrics.update({"split": split, "manifest": str(manifest_path), "normalize": info["normalizer"].get("mode"),
                    "seen_speakers": seen})
    prefix = out_prefix or f"eval_{split}"
    atomic_write_json(run_dir / f"{prefix}.json", metrics)
    write_predictions(run_dir / f"{prefix}_predictions.csv", rows, logits, labels)
    plot_confusion(metrics["confusion_matrix"], labels, run_dir / f"{prefix}_confusion_matrix.png",
                   f"{run_dir.name} on {split}: UAR {metrics['uar']:.3f}")
    return metrics
