"""Feature registry and built-in features.

>>> from emodet.features import compute_feature
>>> compute_feature("logmel", wav, 16000, {"n_mels": 64})   # (64, frames) float32
"""

from .registry import (
    FeatureSpec,
    apply_view,
    canonical_params,
    check_feature_output,
    compute_feature,
    compute_feature_from_file,
    get_feature,
    get_feature_spec,
    list_features,
    register_feature,
    resolve_params,
)
from . import builtin as _builtin  # noqa: F401  (registers the built-ins)
from . import encoders as _encoders  # noqa: F401  (registers the encoder family)
from .plugins import load_plugin, load_plugins
from .spectral import MFCC, AmplitudeToDB, LogMel, MelScale, Spectrogram, build_logmel, build_mfcc

__all__ = [
    "FeatureSpec", "apply_view", "register_feature", "get_feature", "get_feature_spec", "list_features", "resolve_params",
    "compute_feature", "compute_feature_from_file", "check_feature_output", "canonical_params", "load_plugin", "load_plugins",
    "Spectrogram", "MelScale", "AmplitudeToDB", "LogMel", "MFCC", "build_logmel", "build_mfcc",
]
