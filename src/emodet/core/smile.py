"""openSMILE functionals (eGeMAPS, ComParE_2016, emobase), shared by the feature registry and the torch-free runtime."""

from __future__ import annotations

import functools
import threading

import numpy as np

from .audio import trim_silence
from .errors import UsageError

FUNCTIONAL_SETS = {"egemaps": "eGeMAPSv02", "compare": "ComParE_2016", "emobase": "emobase"}
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


# Parameters of the functionals features: ``trim_db`` (None, or decibels) drops leading and
# trailing silence first, so that statistics over a recording describe its speech, not the
# second of room noise before it (RAVDESS) or the digital padding after it (EmoDB's copy).
FUNCTIONAL_DEFAULTS = {"trim_db": None}


def check_functional_params(params: dict) -> None:
    """Refuse a ``trim_db`` that is neither null nor a positive number of decibels."""
    trim_db = params.get("trim_db")
    if trim_db is not None and (isinstance(trim_db, bool) or not isinstance(trim_db, (int, float)) or not trim_db > 0):
        raise UsageError(f"feature parameter 'trim_db' must be a positive number of decibels (e.g. 30) "
                         f"or null for no trimming, got {trim_db!r}")


def functionals(feature_set: str, wav: np.ndarray, sr: int, trim_db: float | None = None) -> np.ndarray:
    """``(n_functionals, 1)`` float32 for a mono signal at ``sr`` (its own rate: openSMILE never resamples),
    computed after ``trim_silence(wav, sr, trim_db)`` when ``trim_db`` is set."""
    if trim_db is not None:
        check_functional_params({"trim_db": trim_db})
        wav, _ = trim_silence(wav, sr, trim_db)
    with _SMILE_LOCK:
        values = _smile(feature_set).process_signal(wav, sr).to_numpy(dtype=np.float32)
    return values.reshape(-1, 1)
