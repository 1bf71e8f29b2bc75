"""Training: ``train_loop``, losses, checkpoints, distillation teachers, DDP.

Names are imported lazily, so that importing ``emodet.training.device`` (which evaluation uses)
does not import the loop, which imports evaluation.
"""

_LAZY = {
    "train_loop": "loop", "TrainResult": "loop", "FocalLoss": "losses", "balanced_class_weights": "losses",
    "distillation_loss": "losses", "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
}
__all__ = ["TrainConfig", "TrainingConfig", *_LAZY]


def __getattr__(name):
    import importlib

    if name in ("TrainConfig", "TrainingConfig"):
        return getattr(importlib.import_module("emodet.config"), name)
    if name in _LAZY:
        return getattr(importlib.import_module(f"emodet.training.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'emodet.training' has no attribute {name!r}")
