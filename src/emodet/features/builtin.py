"""Built-in features: ``logmel`` (alias ``mel``), ``mfcc``, ``chroma``, ``egemaps``, ``compare``."""

from __future__ import annotations

import functools
import threading

import numpy as np
import torch

from ..core.errors import UsageError
from ..core.smile import FUNCTIONAL_DEFAULTS, FUNCTIONAL_SETS, check_functional_params, functionals
from .registry import register_feature
from .spectral import (LOGMEL_DEFAULTS, MFCC_DEFAULTS, build_logmel, build_mfcc, check_frame_params,
                       resolve_frame_params)

_module_lock = threading.Lock()


@functools.lru_cache(maxsize=32)
def _cached_module(kind: str, sr: int, frozen_params: tuple) -> torch.nn.Module:
    factory = build_logmel if kind == "logmel" else build_mfcc
    return factory(sr, dict(frozen_params)).eval()


def _run_module(kind: str, wav: np.ndarray, sr: int, params: dict) -> np.ndarray:
    with _module_lock:
        module = _cached_module(kind, int(sr), tuple(sorted(params.items())))
    x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
    with torch.inference_mode():
        return module(x).numpy()


def _check_frame_rate(params: dict, sr: int) -> None:
    resolve_frame_params(sr, params)


@register_feature("logmel", defaults=LOGMEL_DEFAULTS, module_factory=build_logmel, aliases=("mel",),
                  check_params=check_frame_params, check_rate=_check_frame_rate, keyed_if_set=("ref",),
                  description="log-mel spectrogram in dB (n_mels x frames), equal to librosa")
def logmel(wav: np.ndarray, sr: int, params: dict) -> np.ndarray:
    return _run_module("logmel", wav, sr, params)


@register_feature("mfcc", defaults=MFCC_DEFAULTS, module_factory=build_mfcc, check_params=check_frame_params,
                  check_rate=_check_frame_rate, keyed_if_set=("ref",),
                  description="MFCC (n_mfcc x frames), equal to librosa.feature.mfcc")
def mfcc(wav: np.ndarray, sr: int, params: dict) -> np.ndarray:
    return _run_module("mfcc", wav, sr, params)


_CHROMA_DEFAULTS = {"n_fft": None, "win_length": None, "hop_length": None, "n_chroma": 12}


def _check_chroma_params(params: dict) -> None:
    n_chroma = params["n_chroma"]
    if isinstance(n_chroma, bool) or not isinstance(n_chroma, int) or n_chroma <= 0:
        raise UsageError(f"feature parameter 'n_chroma' must be a positive integer, got {n_chroma!r}")


@register_feature("chroma", defaults=_CHROMA_DEFAULTS, check_params=_check_chroma_params,
                  description="chromagram via librosa (n_chroma x frames)")
def chroma(wav: np.ndarray, sr: int, params: dict) -> np.ndarray:
    import librosa

    p = resolve_frame_params(sr, {**params, "n_mels": 1})
    return librosa.feature.chroma_stft(y=wav, sr=sr, n_fft=p["n_fft"], hop_length=p["hop_length"],
                                       win_length=p["win_length"], n_chroma=p["n_chroma"], pad_mode="constant")


# openSMILE's functionals run at each file's own rate: resampling 22.05 or 48 kHz audio to 16 kHz
# would throw away the 8-11 kHz band that ComParE's spectral descriptors use. Parameter: trim_db
# (leading/trailing silence dropped first; see emodet.core.smile).
def _register_functionals(name: str, size: str) -> None:
    def fn(wav: np.ndarray, sr: int, params: dict) -> np.ndarray:
        return functionals(name, wav, sr, params["trim_db"])

    register_feature(name, defaults=FUNCTIONAL_DEFAULTS, native_rate=True, check_params=check_functional_params,
                     description=f"openSMILE {FUNCTIONAL_SETS[name]} functionals ({size}) at the file's own rate; "
                                 "needs emodet[opensmile]")(fn)


for _name, _size in (("egemaps", "88 x 1"), ("compare", "6373 x 1"), ("emobase", "988 x 1")):
    _register_functionals(_name, _size)
