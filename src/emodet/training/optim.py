"""What ``train_loop`` builds from the training config: loss, optimiser and learning-rate schedule."""

from __future__ import annotations

import torch

from ..config import TrainingConfig
from ..core.errors import UsageError
from .device import unwrap
from .losses import FocalLoss, balanced_class_weights

METRIC_MODES = {"uar": "max", "wa": "max", "macro_f1": "max", "loss": "min"}
LBFGS_ITERS_PER_EPOCH = 20


def make_loss(cfg: TrainingConfig, targets, n_classes: int, device) -> FocalLoss:
    """Cross-entropy or focal loss, with balanced class weights from the training ``targets`` when asked."""
    weight = None
    if cfg.loss.class_weights == "balanced":
        if targets is None:
            raise UsageError("training.loss.class_weights balanced needs the training targets: pass targets= to "
                             "train_loop (a streaming dataset has none; use class_weights: none)")
        weight = balanced_class_weights(targets, n_classes).to(device)
    return FocalLoss(cfg.loss.gamma if cfg.loss.type == "focal" else 0.0, weight, cfg.loss.label_smoothing)


def make_optimizer(model: torch.nn.Module, cfg: TrainingConfig, targets=None) -> torch.optim.Optimizer:
    inner = unwrap(model)
    if hasattr(inner, "param_groups") and cfg.optimizer != "lbfgs":  # e.g. pretrained layers slower than a new head
        params = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in inner.param_groups(cfg.lr)]
    else:
        params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True)
    check_lbfgs(cfg, targets)  # L2 is added to the objective by lbfgs_epoch (L-BFGS has no weight_decay)
    return torch.optim.LBFGS(params, lr=cfg.lr, max_iter=LBFGS_ITERS_PER_EPOCH, history_size=20,
                             line_search_fn="strong_wolfe")


def check_lbfgs(cfg: TrainingConfig, targets) -> None:
    """Full-batch L-BFGS minimises one deterministic objective; refuse what would make it move under it."""
    problems = []
    if cfg.scheduler != "none":
        problems.append(f"training.scheduler {cfg.scheduler!r} (its line search picks each step): set none")
    if cfg.augment.mixup > 0:
        problems.append("training.augment.mixup (a different objective every step): set 0")
    if cfg.amp:
        problems.append("training.amp (line searches need full precision): set false")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        problems.append("distributed training (each rank would search its own step): train on one process")
    if targets is None:
        problems.append("a dataset without targets, e.g. a streaming one (the full-batch objective needs the training "
                        "set's size): use a cached one")
    if problems:
        raise UsageError("training.optimizer lbfgs does not go with " + "; ".join(problems))


class Schedule:
    """The learning-rate schedule and when it steps: ``onecycle`` after every batch, ``cosine`` after every
    epoch, ``plateau`` after every epoch on the validation metric; ``none`` never."""

    def __init__(self, optimizer, cfg: TrainingConfig, steps_per_epoch: int):
        self.kind = cfg.scheduler
        epochs = max(1, cfg.epochs)
        if self.kind == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        elif self.kind == "onecycle":
            peaks = [g["lr"] for g in optimizer.param_groups]  # each group's own (a model may give several)
            self.scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peaks, epochs=epochs,
                                                                 steps_per_epoch=max(1, steps_per_epoch))
        elif self.kind == "plateau":
            mode = METRIC_MODES[cfg.early_stopping.metric]
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode=mode, factor=0.5, patience=max(1, cfg.early_stopping.patience // 3))
        else:
            self.scheduler = None

    def after_batch(self) -> None:
        if self.kind == "onecycle":
            self.scheduler.step()

    def after_epoch(self, metric: float) -> None:
        if self.kind == "cosine":
            self.scheduler.step()
        elif self.kind == "plateau":
            self.scheduler.step(metric)

    def state_dict(self) -> dict | None:
        return self.scheduler.state_dict() if self.scheduler is not None else None

    def load_state_dict(self, state: dict | None) -> None:
        if self.scheduler is not None and state is not None:
            self.scheduler.load_state_dict(state)
