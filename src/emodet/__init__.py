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
    "load_audio": ("emodet.audio", "load_audio"),
    "AudioError": ("emodet.errors", "AudioError"),
    "EmodetError": ("emodet.errors", "EmodetError"),
    "UsageError": ("emodet.errors", "UsageError"),
    "register_feature": ("emodet.features", "register_feature"),
    "get_feature": ("emodet.features", "get_feature"),
    "list_features": ("emodet.features", "list_features"),
    "compute_feature": ("emodet.features", "compute_feature"),
    "build_model": ("emodet.models", "build_model"),
    "register_model": ("emodet.models", "register_model"),
    "list_models": ("emodet.models", "list_models"),
    "train_loop": ("emodet.training", "train_loop"),
    "TrainConfig": ("emodet.training", "TrainConfig"),
    "load_config": ("emodet.config", "load_config"),
    "run_experiment": ("emodet.experiment", "run_experiment"),
    "EmotionPredictor": ("emodet.runtime", "EmotionPredictor"),
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
