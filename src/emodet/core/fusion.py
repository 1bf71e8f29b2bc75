"""Late fusion arithmetic, shared by the runtime, evaluation and the benchmarks (numpy only).

``EnsembleModel`` (``emodet.models.ensemble``) computes the same weighted mean in torch, since it
must go into an exported graph; it takes its weights through ``normalized_weights`` too.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import UsageError


def normalized_weights(weights: Sequence[float] | None, n: int, what: str = "fusion") -> np.ndarray:
    """``n`` non-negative weights summing to 1 (``None``: equal); anything else is a ``UsageError``."""
    if n < 1:
        raise UsageError(f"{what} needs at least one member")
    w = [1.0] * n if weights is None else [float(x) for x in weights]
    if len(w) != n or min(w) < 0 or sum(w) <= 0:
        raise UsageError(f"{what} weights {w}: need one non-negative weight a member ({n} members), not all zero")
    return np.asarray(w) / sum(w)


def fuse_probabilities(member_probabilities: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """The weighted mean of members' probabilities, each ``(B, C)`` in the same label order."""
    w = normalized_weights(weights, len(member_probabilities))
    return sum(wi * np.asarray(p, dtype=np.float64) for wi, p in zip(w, member_probabilities))


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis`` (stable)."""
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
