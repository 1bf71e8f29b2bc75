"""Classification metrics for emotion recognition: UAR, WA, macro-F1, confusion matrix.

Conventions (documented, tested): a class absent from the targets is left out of UAR and
macro-F1 (its recall is undefined); a class present in the targets but never predicted has
recall 0 and precision 0 (F1 0). WA is plain accuracy.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(targets, predictions, n_classes: int) -> np.ndarray:
    """``(n_classes, n_classes)`` counts; rows are true classes, columns predicted."""
    t = np.asarray(targets, dtype=np.int64)
    p = np.asarray(predictions, dtype=np.int64)
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def metrics_from_confusion(cm: np.ndarray, labels: list[str] | None = None) -> dict:
    """UAR, WA, macro-F1 and per-class precision/recall/F1/support from a confusion matrix."""
    cm = np.asarray(cm, dtype=np.float64)
    support = cm.sum(1)
    predicted = cm.sum(0)
    tp = np.diag(cm)
    present = support > 0
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    total = cm.sum()
    labels = labels or [str(i) for i in range(len(cm))]
    return {
        "uar": float(recall[present].mean()) if present.any() else 0.0,
        "wa": float(tp.sum() / total) if total else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "n": int(total),
        "labels": list(labels),
        "confusion_matrix": cm.astype(int).tolist(),
        "per_class": {lab: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                            "support": int(support[i])} for i, lab in enumerate(labels)},
    }


def classification_metrics(targets, predictions, labels: list[str]) -> dict:
    """Metrics of integer ``predictions`` against ``targets`` over ``labels``."""
    return metrics_from_confusion(confusion_matrix(targets, predictions, len(labels)), labels)


def uar(targets, predictions, n_classes: int | None = None) -> float:
    """Unweighted average recall (balanced accuracy) over classes present in ``targets``."""
    n = n_classes or int(max(np.max(targets), np.max(predictions)) + 1)
    return metrics_from_confusion(confusion_matrix(targets, predictions, n))["uar"]


def per_group_uar(predictions: list[dict], labels: list[str], key: str = "speaker") -> dict[str, float]:
    """UAR of each group (``key`` of prediction rows with ``label`` and ``predicted``), groups sorted."""
    index = {lab: i for i, lab in enumerate(labels)}
    groups: dict[str, list[dict]] = {}
    for r in predictions:
        groups.setdefault(r[key], []).append(r)
    return {g: classification_metrics([index[r["label"]] for r in rows], [index[r["predicted"]] for r in rows],
                                      labels)["uar"] for g, rows in sorted(groups.items())}
