"""What predictions look like (torch-free): probabilities as ``{label: p}``, windows, the abstaining top label,
and the ``predict`` / ``predict_batch`` API every predictor (one model or a fusion) shares."""

from __future__ import annotations

import numpy as np


class ProbabilityAPI:
    """``predict`` / ``predict_batch`` for any predictor with ``labels`` and ``probabilities(items, sr)``."""

    labels: list[str]

    def probabilities(self, items, sr: int | None = None) -> np.ndarray:
        raise NotImplementedError

    def predict(self, item, sr: int | None = None) -> dict:
        """``{label: probability}`` for a file path, ``(samples, rate)`` or a samples array with ``sr``."""
        return as_dict(self.labels, self.probabilities([item], sr)[0])

    def predict_batch(self, items, sr: int | None = None) -> list[dict]:
        return [as_dict(self.labels, p) for p in self.probabilities(items, sr)]


UNCERTAIN = "uncertain"


def top_label(probabilities: dict, min_confidence: float = 0.0) -> str:
    """The most probable label, or ``"uncertain"`` when its probability is below ``min_confidence`` (abstain)."""
    label = max(probabilities, key=probabilities.get)
    return label if probabilities[label] >= min_confidence else UNCERTAIN


def as_dict(labels: list[str], probs: np.ndarray) -> dict:
    return {lab: float(v) for lab, v in zip(labels, probs)}


def window_dicts(labels: list[str], windows: list[tuple]) -> list[dict]:
    out = []
    for start, end, probs in windows:
        d = as_dict(labels, probs)
        out.append({"start": start, "end": end, "label": max(d, key=d.get), "probabilities": d})
    return out
