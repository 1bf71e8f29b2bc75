"""``train_loop``: one readable training loop (nanoGPT's spirit).

Mixed precision through ``torch.autocast`` (bf16 on CPU, fp16 with a GradScaler on CUDA),
early stopping on a validation metric, best and last checkpoints written atomically, exact
resume (model, optimiser, scheduler, scaler, RNG states, epoch, early-stopping state),
distillation from a teacher, class weights and focal loss, SpecAugment and mixup, gradient
clipping, cosine / one-cycle / plateau schedules, a progress bar with live loss and UAR.

Determinism: every epoch reseeds the RNGs from ``(seed, epoch)``, so the data order, crops,
dropout and augmentation of epoch k do not depend on whether the run was interrupted before it.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import UsageError
from ..evaluation.metrics import classification_metrics
from ..io import atomic_write_csv
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, seed_everything, set_rng_state
from .losses import FocalLoss, balanced_class_weights, distillation_loss, mixup, soft_targets, spec_augment

METRIC_MODES = {"uar": "max", "wa": "max", "macro_f1": "max", "loss": "min"}
LBFGS_ITERS_PER_EPOCH = 20


@dataclass
class TrainConfig:
    """Everything ``train_loop`` needs to know; the ``training`` section of a config maps onto it."""

    epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # adamw | adam | sgd | lbfgs (full batch: an epoch = one L-BFGS step)
    scheduler: str = "cosine"  # none | cosine | onecycle | plateau
    amp: bool = False
    early_stopping_metric: str = "uar"  # uar | wa | macro_f1 | loss
    patience: int = 10  # epochs without improvement before stopping; 0 disables
    min_delta: float = 0.0
    loss: str = "ce"  # ce | focal
    gamma: float = 2.0
    class_weights: str = "none"  # none | balanced
    label_smoothing: float = 0.0
    specaugment: bool = False
    freq_masks: int = 2
    freq_width: int = 8
    time_masks: int = 2
    time_width: int = 20
    mixup: float = 0.0  # Beta(alpha, alpha); 0 disables
    distill_weight: float = 0.5
    distill_temperature: float = 2.0
    grad_clip: float = 5.0  # 0 disables
    seed: int = 0
    device: str = "auto"


@dataclass
class TrainResult:
    history: list = field(default_factory=list)
    best_epoch: int = -1
    best_metric: float = float("nan")
    stopped_early: bool = False
    epochs_run: int = 0


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def autocast_context(device: torch.device, enabled: bool):
    """bf16 autocast on CPU, fp16 on CUDA; a no-op when disabled."""
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=enabled)


@torch.no_grad()
def predict_logits(model: nn.Module, loader, device: torch.device | str = "cpu", amp: bool = False):
    """Logits ``(N, C)`` float32 and targets ``(N,)`` of a loader (chunked batches pooled per item)."""
    from ..data.dataset import pool_chunks

    device = torch.device(device)
    model = model.module if hasattr(model, "module") else model  # DDP: no collectives in evaluation
    model.eval()
    outs, targets = [], []
    for batch in loader:
        x, y, lengths = batch[0].to(device), batch[1], batch[2].to(device)
        with autocast_context(device, amp):
            logits = model(x, lengths).float()
        if len(batch) > 3 and torch.is_tensor(batch[3]):  # chunk_collate: pool the windows of each item
            logits = pool_chunks(logits, batch[3].to(device), len(y))
        outs.append(logits.cpu())
        targets.append(y)
    if not outs:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    return torch.cat(outs), torch.cat(targets)


def _make_optimizer(model, cfg: TrainConfig):
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True)
    if cfg.optimizer == "lbfgs":  # L2 is added to the objective by _lbfgs_epoch (L-BFGS has no weight_decay)
        return torch.optim.LBFGS(params, lr=cfg.lr, max_iter=LBFGS_ITERS_PER_EPOCH, history_size=20,
                                 line_search_fn="strong_wolfe")
    raise UsageError(f"training.optimizer {cfg.optimizer!r}: valid values are adamw, adam, sgd, lbfgs")


def _check_lbfgs(cfg: TrainConfig, train_loader) -> None:
    """Full-batch L-BFGS minimises one deterministic objective; refuse what would make it move under it."""
    problems = []
    if cfg.scheduler != "none":
        problems.append(f"training.scheduler {cfg.scheduler!r} (its line search picks each step): set none")
    if cfg.mixup > 0:
        problems.append("training.augment.mixup (a different objective every step): set 0")
    if cfg.amp:
        problems.append("training.amp (line searches need full precision): set false")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        problems.append("distributed training (each rank would search its own step): train on one process")
    if getattr(train_loader.dataset, "targets", None) is None:
        problems.append("a streaming dataset (the full-batch objective needs the training set's size): use a cached one")
    if problems:
        raise UsageError("training.optimizer lbfgs does not go with " + "; ".join(problems))


def _make_scheduler(optimizer, cfg: TrainConfig, steps_per_epoch: int):
    if cfg.scheduler == "none":
        return None
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, cfg.epochs))
    if cfg.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, epochs=max(1, cfg.epochs),
                                                   steps_per_epoch=max(1, steps_per_epoch))
    if cfg.scheduler == "plateau":
        mode = METRIC_MODES.get(cfg.early_stopping_metric, "max")
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=0.5, patience=max(1, cfg.patience // 3))
    raise UsageError(f"training.scheduler {cfg.scheduler!r}: valid values are none, cosine, onecycle, plateau")


def _make_loss(cfg: TrainConfig, train_targets, n_classes: int, device) -> FocalLoss:
    if cfg.loss not in ("ce", "focal"):
        raise UsageError(f"training.loss.type {cfg.loss!r}: valid values are ce, focal")
    if cfg.class_weights not in ("none", "balanced"):
        raise UsageError(f"training.loss.class_weights {cfg.class_weights!r}: valid values are none, balanced")
    weight = balanced_class_weights(train_targets, n_classes).to(device) if cfg.class_weights == "balanced" else None
    return FocalLoss(cfg.gamma if cfg.loss == "focal" else 0.0, weight, cfg.label_smoothing)


def _batch_losses(model, batch, criterion, cfg: TrainConfig, teacher, device, n_classes: int, epoch: int):
    """Augment one training batch and return ``(loss, distillation loss or None, batch size)``.

    ``loss`` is the criterion's weighted mean over the batch (distillation's is a plain mean).
    """
    x, y, lengths, *extra = batch
    x, y, lengths = x.to(device, non_blocking=True), y.to(device), lengths.to(device)
    if cfg.specaugment:
        x = spec_augment(x, lengths, cfg.freq_masks, cfg.freq_width, cfg.time_masks, cfg.time_width)
    targets = soft_targets(y, n_classes) if cfg.mixup > 0 else y
    if cfg.mixup > 0:
        x, targets, lengths = mixup(x, targets, lengths, cfg.mixup)
    kd = None
    with autocast_context(device, cfg.amp):
        logits = model(x, lengths)
        loss = criterion(logits, targets)
        if teacher is not None and cfg.distill_weight > 0:
            with torch.no_grad():  # a per-recording teacher's logits ride along in the batch
                teacher_logits = torch.stack(extra[0]).to(device) if getattr(teacher, "per_item", False) \
                    else teacher(x, lengths)
            kd = distillation_loss(logits, teacher_logits, cfg.distill_temperature)
    if not torch.isfinite(loss):
        raise UsageError(f"training diverged: loss is {loss.item()} at epoch {epoch + 1} "
                         "(lower training.lr, or check the features for extreme values)")
    return loss, kd, len(y)


def _lbfgs_epoch(model, train_loader, optimizer, criterion, cfg: TrainConfig, teacher, device, n_classes: int,
                 epoch: int) -> float:
    """One L-BFGS step (up to ``LBFGS_ITERS_PER_EPOCH`` iterations) on the whole training set.

    The objective is the full-batch weighted mean loss (distillation mixed in as in the minibatch
    path) plus ``weight_decay / 2 * ||W||^2`` over weight matrices, not biases: for a linear model
    it is exactly scikit-learn's ``LogisticRegression(C=1 / (weight_decay * n))``. The step's
    batches (and so their crops) are loaded once and held in memory (a full-batch method is for
    data that fits); every evaluation reseeds the RNGs, so dropout and SpecAugment masks are the
    same too and the line search sees one function. Gradient clipping does not apply. Returns the
    data term at the step's start.
    """
    targets = torch.as_tensor(list(train_loader.dataset.targets), dtype=torch.long)
    n_total = float(len(targets))
    class_weight = criterion.weight.cpu() if criterion.weight is not None else None
    weight_total = float(class_weight[targets].sum()) if class_weight is not None else n_total
    decayed = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    data_terms = []
    batches = list(train_loader)  # loaded once a step (the RNGs were seeded for this epoch): same crops each pass
    seed = cfg.seed * 100003 + epoch

    def closure():
        seed_everything(seed)  # the same dropout and SpecAugment masks in every evaluation of the step
        optimizer.zero_grad(set_to_none=True)
        data_term = 0.0
        for batch in batches:
            loss, kd, n = _batch_losses(model, batch, criterion, cfg, teacher, device, n_classes, epoch)
            # the batch's weighted mean times its share of the total weight: exactly the full-batch mean
            weight_sum = float(class_weight[batch[1]].sum()) if class_weight is not None else n
            part = loss * (weight_sum / weight_total)
            if kd is not None:
                part = (1 - cfg.distill_weight) * part + cfg.distill_weight * kd * (n / n_total)
            part.backward()
            data_term += float(part.detach())
        penalty = 0.5 * cfg.weight_decay * sum((p * p).sum() for p in decayed) if decayed and cfg.weight_decay else None
        if penalty is not None:
            penalty.backward()
        data_terms.append(data_term)
        return torch.tensor(data_term + (float(penalty.detach()) if penalty is not None else 0.0))

    optimizer.step(closure)
    return data_terms[0]


def _improved(value: float, best: float, mode: str, min_delta: float) -> bool:
    if math.isnan(best):
        return True
    return value > best + min_delta if mode == "max" else value < best - min_delta


def train_loop(model: nn.Module, train_loader, val_loader, cfg: TrainConfig, labels: list[str], *,
               run_dir: str | Path | None = None, resume: bool = False,
               teacher: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
               progress: bool | None = None, writer=None, is_main: bool = True,
               reduce_metrics: Callable | None = None) -> TrainResult:
    """Train ``model``; with ``run_dir``, write ``checkpoints/best.pt``, ``checkpoints/last.pt`` and ``history.csv``.

    ``resume=True`` continues from ``run_dir/checkpoints/last.pt`` exactly where it stopped.
    ``teacher(x, lengths) -> logits`` adds distillation with ``cfg.distill_weight``; a teacher with
    ``per_item = True`` instead supplies its logits as the 4th element of each training batch.
    ``is_main``: only the main process writes (DDP rank 0). ``reduce_metrics(logits, targets)``
    gathers validation outputs from every rank (DDP).
    """
    from tqdm.auto import tqdm

    device = resolve_device(cfg.device)
    model.to(device)
    n_classes = len(labels)
    mode = METRIC_MODES.get(cfg.early_stopping_metric)
    if mode is None:
        raise UsageError(f"training.early_stopping.metric {cfg.early_stopping_metric!r}: valid values are "
                         f"{', '.join(METRIC_MODES)}")
    seed_everything(cfg.seed)
    train_targets = getattr(train_loader.dataset, "targets", None) or []
    criterion = _make_loss(cfg, train_targets, n_classes, device)
    if cfg.optimizer == "lbfgs":
        _check_lbfgs(cfg, train_loader)
    optimizer = _make_optimizer(model, cfg)
    try:
        steps_per_epoch = len(train_loader)
    except TypeError:  # an iterable dataset of unknown length
        steps_per_epoch = 1
    scheduler = _make_scheduler(optimizer, cfg, steps_per_epoch)
    use_scaler = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    ckpt_dir = Path(run_dir) / "checkpoints" if run_dir is not None else None
    result = TrainResult()
    start_epoch, bad_epochs = 0, 0

    if resume and ckpt_dir is not None and (ckpt_dir / "last.pt").exists():
        state = load_checkpoint(ckpt_dir / "last.pt", map_location=device)
        _unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch = int(state["epoch"]) + 1
        result.history = list(state["history"])
        result.best_epoch, result.best_metric = int(state["best_epoch"]), float(state["best_metric"])
        bad_epochs = int(state["bad_epochs"])
        set_rng_state(state["rng"])
        if bad_epochs >= cfg.patience > 0 or start_epoch >= cfg.epochs:
            result.stopped_early = bad_epochs >= cfg.patience > 0
            result.epochs_run = start_epoch
            return result

    for epoch in range(start_epoch, cfg.epochs):
        seed_everything(cfg.seed * 100003 + epoch)
        if getattr(train_loader, "generator", None) is not None:
            train_loader.generator.manual_seed(cfg.seed * 100003 + epoch)
        sampler = getattr(train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        if hasattr(train_loader.dataset, "set_epoch"):
            train_loader.dataset.set_epoch(epoch)
        model.train()
        t_epoch = time.perf_counter()
        wait = 0.0
        total_loss, n_seen = 0.0, 0
        steps = 1 if cfg.optimizer == "lbfgs" else steps_per_epoch
        bar = tqdm(total=steps if steps > 1 else None, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   unit="batch", leave=False, disable=_bar_disabled(progress, is_main))
        t_wait = time.perf_counter()
        if cfg.optimizer == "lbfgs":
            total_loss, n_seen = _lbfgs_epoch(model, train_loader, optimizer, criterion, cfg, teacher, device,
                                              n_classes, epoch), 1
            bar.update(1)
        else:
            for batch in train_loader:
                wait += time.perf_counter() - t_wait
                loss, kd, n = _batch_losses(model, batch, criterion, cfg, teacher, device, n_classes, epoch)
                if kd is not None:
                    loss = (1 - cfg.distill_weight) * loss + cfg.distill_weight * kd
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                if cfg.scheduler == "onecycle":
                    scheduler.step()
                total_loss += loss.item() * n
                n_seen += n
                bar.update(1)
                bar.set_postfix(loss=f"{total_loss / n_seen:.3f}")
                t_wait = time.perf_counter()
        bar.close()
        train_seconds = time.perf_counter() - t_epoch

        logits, targets = predict_logits(model, val_loader if val_loader is not None else (), device, cfg.amp)
        if reduce_metrics is not None and val_loader is not None:
            logits, targets = reduce_metrics(logits, targets)
        val = classification_metrics(targets.numpy(), logits.argmax(1).numpy(), labels) if len(targets) else \
            {"uar": float("nan"), "wa": float("nan"), "macro_f1": float("nan")}
        val_loss = float(torch.nn.functional.cross_entropy(logits, targets)) if len(targets) else float("nan")
        metric = val_loss if cfg.early_stopping_metric == "loss" else val[cfg.early_stopping_metric]
        if cfg.scheduler == "cosine":
            scheduler.step()
        elif cfg.scheduler == "plateau":
            scheduler.step(metric)

        row = {"epoch": epoch + 1, "train_loss": round(total_loss / max(n_seen, 1), 6), "val_loss": round(val_loss, 6),
               "val_uar": round(val["uar"], 6), "val_wa": round(val["wa"], 6), "val_macro_f1": round(val["macro_f1"], 6),
               "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.perf_counter() - t_epoch, 3),
               "data_wait_share": round(wait / train_seconds, 4) if train_seconds > 0 else 0.0}
        result.history.append(row)
        improved = _improved(metric, result.best_metric, mode, cfg.min_delta)
        if improved:
            result.best_epoch, result.best_metric, bad_epochs = epoch + 1, float(metric), 0
        else:
            bad_epochs += 1
        if is_main:
            print_epoch(row, improved, progress)
            if writer is not None:
                for key in ("train_loss", "val_loss", "val_uar", "val_wa", "val_macro_f1", "lr"):
                    writer.add_scalar(key, row[key], epoch + 1)
                writer.flush()
            if ckpt_dir is not None:
                model_state = _unwrap(model).state_dict()
                if improved:
                    save_checkpoint(ckpt_dir / "best.pt", {"model": model_state, "epoch": epoch,
                                                           "metric": cfg.early_stopping_metric, "value": float(metric)})
                save_checkpoint(ckpt_dir / "last.pt", {
                    "model": model_state, "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "scaler": scaler.state_dict() if use_scaler else None, "epoch": epoch,
                    "history": result.history, "best_epoch": result.best_epoch, "best_metric": result.best_metric,
                    "bad_epochs": bad_epochs, "rng": rng_state(), "config": asdict(cfg)})
                atomic_write_csv(Path(run_dir) / "history.csv", result.history, list(row))
        result.epochs_run = epoch + 1
        if cfg.patience > 0 and bad_epochs >= cfg.patience:
            result.stopped_early = True
            break
    return result


def _bar_disabled(progress: bool | None, is_main: bool) -> bool | None:
    if not is_main or progress is False:
        return True
    return None if progress is None else False  # None: tqdm shows a bar only on a terminal


def print_epoch(row: dict, improved: bool, progress: bool | None) -> None:
    if progress is False:
        return
    mark = " *" if improved else ""
    val = (f"val loss {row['val_loss']:.4f}  val UAR {row['val_uar']:.3f}  WA {row['val_wa']:.3f}"
           if row["val_uar"] == row["val_uar"] else "no validation split")
    print(f"epoch {row['epoch']:3d}  loss {row['train_loss']:.4f}  {val}  {row['seconds']:.1f}s{mark}", flush=True)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model
