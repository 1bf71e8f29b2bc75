"""emodet: speech emotion recognition from a folder of recordings to a tiny ONNX model.

The public API is imported lazily, so ``import emodet.runtime`` (ONNX Runtime inference)
never imports torch.
"""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("emodet")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.1.0"

_LAZY = {
    "load_audio": ("emodet.core.audio", "load_audio"),
    "AudioError": ("emodet.core.errors", "AudioError"),
    "EmodetError": ("emodet.core.errors", "EmodetError"),
    "UsageError": ("emodet.core.errors", "UsageError"),
    "register_feature": ("emodet.features", "register_feature"),
    "get_feature": ("emodet.features", "get_feature"),
    "list_features": ("emodet.features", "list_features"),
    "compute_feature": ("emodet.features", "compute_feature"),
    "build_model": ("emodet.models", "build_model"),
    "register_model": ("emodet.models", "register_model"),
    "list_models": ("emodet.models", "list_models"),
    "train_loop": ("emodet.training", "train_loop"),
    "TrainConfig": ("emodet.config", "TrainConfig"),
    "Config": ("emodet.config", "Config"),
    "load_config": ("emodet.config", "load_config"),
    "run_experiment": ("emodet.workflows.experiment", "run_experiment"),
    "run_cv": ("emodet.workflows.cv", "run_cv"),
    "load_run": ("emodet.runs", "load_run"),
    "load_predictor": ("emodet.runs", "load_predictor"),
    "EmotionPredictor": ("emodet.runtime", "EmotionPredictor"),
    "FusedPredictor": ("emodet.runtime", "FusedPredictor"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'emodet' has no attribute {name!r}")
