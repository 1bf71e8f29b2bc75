"""openSMILE functionals (eGeMAPS, ComParE_2016), shared by the feature registry and the torch-free runtime."""

from __future__ import annotations

import functools
import threading

import numpy as np

from .errors import UsageError

FUNCTIONAL_SETS = {"egemaps": "eGeMAPSv02", "compare": "ComParE_2016"}
_SMILE_LOCK = threading.Lock()


@functools.lru_cache(maxsize=4)
def _smile(feature_set: str):
    try:
        import opensmile
    except ImportError:
        raise UsageError(
            f"feature {feature_set!r} needs openSMILE, which is not installed: pip install 'emodet[opensmile]'"
        ) from None
    return opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, FUNCTIONAL_SETS[feature_set]),
                           feature_level=opensmile.FeatureLevel.Functionals)


def functionals(feature_set: str, wav: np.ndarray, sr: int) -> np.ndarray:
    """``(n_functionals, 1)`` float32 for a mono signal at ``sr`` (its own rate: openSMILE never resamples)."""
    with _SMILE_LOCK:
        values = _smile(feature_set).process_signal(wav, sr).to_numpy(dtype=np.float32)
    return values.reshape(-1, 1)
