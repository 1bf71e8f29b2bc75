from .checkpoint import load_checkpoint, save_checkpoint
from .losses import FocalLoss, balanced_class_weights, distillation_loss
from .loop import TrainConfig, TrainResult, predict_logits, train_loop

__all__ = ["train_loop", "TrainConfig", "TrainResult", "predict_logits", "FocalLoss", "balanced_class_weights",
           "distillation_loss", "load_checkpoint", "save_checkpoint"]
