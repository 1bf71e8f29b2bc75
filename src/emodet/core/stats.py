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


WHITENING = ("coral", "ledoit-wolf")


def whitening(arrays: Iterable[np.ndarray], method: str = "coral") -> np.ndarray:
    """``W (F, F)``: the inverse square root of a regularised covariance ``C`` of centred ``(F, T)`` arrays (z-scored
    by their own statistics); one matrix a domain aligns domains' second-order statistics. ``coral``: ``C + I``
    (CORAL's own regularisation: the strong, correlated directions damped, a weak one never amplified);
    ``ledoit-wolf``: ``C`` shrunk towards the identity by the Ledoit-Wolf estimate, so ``W @ z`` has (nearly)
    identity covariance (with far fewer recordings than features it amplifies near-null, noisy directions).
    Symmetric (ZCA): each output dimension stays nearest its own input feature."""
    if method not in WHITENING:
        raise UsageError(f"whitening {method!r}: valid values are {', '.join(WHITENING)}")
    cov, fourth, count = None, 0.0, 0
    for a in arrays:
        a = np.asarray(a, dtype=np.float64)
        cov = a @ a.T if cov is None else cov + a @ a.T
        fourth += float(((a**2).sum(0) ** 2).sum())  # sum over frames of |z_t|^4
        count += a.shape[1]
    if cov is None or count == 0:
        raise UsageError("cannot compute a whitening matrix from no data")
    if method == "ledoit-wolf" and count < 3:  # two z-scored vectors are mirror images: no shrinkage, a 1e3 gain
        raise UsageError(f"ledoit-wolf whitening needs at least 3 recordings (frames) of the domain, got {count}; "
                         "give more recordings, or use a model trained with data.whiten: coral")
    p = cov.shape[0]
    cov /= count
    if method == "coral":
        values, vectors = np.linalg.eigh(cov + np.eye(p))
        return ((vectors / np.sqrt(values)) @ vectors.T).astype(np.float32)
    mu = np.trace(cov) / p
    delta = ((cov - mu * np.eye(p)) ** 2).sum() / p  # Ledoit & Wolf (2004), as scikit-learn's ledoit_wolf
    beta = min(max((fourth / count - (cov**2).sum()) / (p * count), 0.0), delta)
    shrink = beta / delta if delta > 0 else 1.0
    values, vectors = np.linalg.eigh((1 - shrink) * cov + shrink * mu * np.eye(p))
    values = np.maximum(values, 1e-6 * max(mu, 1e-12))
    return ((vectors / np.sqrt(values)) @ vectors.T).astype(np.float32)


def group_inputs(arrays: Iterable[np.ndarray], whiten: str | None = None) -> dict[str, np.ndarray]:
    """A per-speaker or per-corpus graph's normalisation inputs from the features ``(F, T)`` of the group's
    recordings: ``norm_mean`` and ``norm_std``, and with ``whiten`` (a ``WHITENING`` method) the group's
    ``norm_whiten`` matrix."""
    if whiten in (None, "none"):
        return dict(zip(("norm_mean", "norm_std"), frame_moments(arrays)))  # streamed
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    mean, std = frame_moments(arrays)
    return {"norm_mean": mean, "norm_std": std,
            "norm_whiten": whitening(((a - mean[:, None]) / std[:, None] for a in arrays), whiten)}
