"""Per-feature statistics over frames, in numpy only (training, export and the torch-free runtime share it)."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from .errors import UsageError


def frame_moments(arrays: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (floored at 1e-5) over all frames of ``(F, T)`` arrays, per feature ``F``."""
    total, total_sq, count = None, None, 0
    for a in arrays:
        a = np.asarray(a, dtype=np.float64)
        if total is None:
            total, total_sq = np.zeros(a.shape[0]), np.zeros(a.shape[0])
        total += a.sum(1)
        total_sq += (a**2).sum(1)
        count += a.shape[1]
    if total is None or count == 0:
        raise UsageError("cannot compute normalisation statistics from no data")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return mean.astype(np.float32), np.maximum(std, 1e-5).astype(np.float32)
