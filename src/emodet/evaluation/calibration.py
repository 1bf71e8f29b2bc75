"""Calibrated confidence: temperature scaling, expected calibration error, Brier score, reliability, abstention.

A network's softmax is over-confident; dividing its logits by one temperature ``T`` fitted on
held-out predictions (a validation split, or a cross-validation's pooled predictions) makes its
confidence honest without changing its answers (Guo et al. 2017). Numpy and scipy only, so the
runtime and the server share it.

    t = fit_temperature(logits, targets)                 # > 1 when the model was over-confident
    ece(softmax(logits / t), targets)                    # expected calibration error, 15 bins
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from ..core.fusion import softmax

BINS = 15


def _nll(logits: np.ndarray, targets: np.ndarray, t: float) -> float:
    z = logits / t
    z = z - z.max(1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-log_p[np.arange(len(targets)), targets].mean())


def fit_temperature(logits, targets) -> float:
    """The temperature ``T`` in [0.05, 20] minimising the negative log-likelihood of ``softmax(logits / T)``."""
    logits = np.asarray(logits, np.float64)
    targets = np.asarray(targets, np.int64)
    if len(targets) == 0:
        return 1.0
    res = minimize_scalar(lambda log_t: _nll(logits, targets, float(np.exp(log_t))), bounds=(np.log(0.05), np.log(20)),
                          method="bounded", options={"xatol": 1e-5})
    return float(np.exp(res.x))


def reliability(probs, targets, bins: int = BINS) -> dict:
    """Confidence (top probability) in ``bins`` equal-width bins: each bin's count, mean confidence and accuracy."""
    probs = np.asarray(probs, np.float64)
    targets = np.asarray(targets, np.int64)
    confidence, predicted = probs.max(1), probs.argmax(1)
    correct = (predicted == targets).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    safe = np.maximum(count, 1)
    return {"edges": edges.tolist(), "count": count.tolist(),
            "confidence": (np.bincount(which, confidence, bins) / safe).tolist(),
            "accuracy": (np.bincount(which, correct, bins) / safe).tolist()}


def ece(probs, targets, bins: int = BINS) -> float:
    """Expected calibration error: the count-weighted mean of |accuracy - confidence| over the bins."""
    r = reliability(probs, targets, bins)
    count = np.asarray(r["count"], np.float64)
    if count.sum() == 0:
        return 0.0
    gap = np.abs(np.asarray(r["accuracy"]) - np.asarray(r["confidence"]))
    return float((count * gap).sum() / count.sum())


def brier(probs, targets) -> float:
    """Mean over recordings of the squared distance between the probabilities and the one-hot truth."""
    probs = np.asarray(probs, np.float64)
    onehot = np.eye(probs.shape[1])[np.asarray(targets, np.int64)]
    return float(((probs - onehot) ** 2).sum(1).mean())


def coverage_curve(probs, targets, thresholds=None) -> list[dict]:
    """Abstaining below each confidence threshold: the share of recordings answered and their accuracy."""
    probs = np.asarray(probs, np.float64)
    targets = np.asarray(targets, np.int64)
    confidence, correct = probs.max(1), probs.argmax(1) == targets
    out = []
    for t in thresholds if thresholds is not None else np.round(np.linspace(0.0, 0.95, 20), 2):
        answered = confidence >= t
        out.append({"threshold": float(t), "coverage": float(answered.mean()) if len(answered) else 0.0,
                    "accuracy": float(correct[answered].mean()) if answered.any() else float("nan")})
    return out


def calibration_report(fit_logits, fit_targets, eval_logits=None, eval_targets=None, fitted_on: str = "val") -> dict:
    """Fit ``T`` on one set of predictions and say what it does on another (the same, by default): the
    temperature, ECE and Brier score before and after, reliability bins after, and the coverage curve."""
    t = fit_temperature(fit_logits, fit_targets)
    logits = np.asarray(eval_logits if eval_logits is not None else fit_logits, np.float64)
    targets = np.asarray(eval_targets if eval_targets is not None else fit_targets, np.int64)
    before, after = softmax(logits), softmax(logits / t)
    return {"temperature": t, "fitted_on": fitted_on, "n_fit": int(len(fit_targets)), "n_eval": int(len(targets)),
            "ece_before": ece(before, targets), "ece_after": ece(after, targets),
            "brier_before": brier(before, targets), "brier_after": brier(after, targets),
            "reliability_before": reliability(before, targets), "reliability_after": reliability(after, targets),
            "coverage": coverage_curve(after, targets)}
