"""``train_loop``: one readable training loop (nanoGPT's spirit).

Mixed precision (``torch.autocast``: bf16 on CPU, fp16 with a GradScaler on CUDA), early stopping,
best and last checkpoints written atomically, exact resume (model, optimiser, scheduler, scaler, RNG
states, epoch, early stopping), distillation, class weights, focal loss, SpecAugment, mixup,
gradient clipping, cosine / one-cycle / plateau schedules, full-batch L-BFGS, a live progress bar.

Determinism: every epoch reseeds the RNGs from ``(seed, epoch)``: epoch k's data order, crops, dropout
and augmentation do not depend on whether the run was interrupted before it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..config import TrainingConfig
from ..core.errors import UsageError
from ..core.io import atomic_write_csv
from ..core.progress import progress_bar
from ..evaluation.metrics import classification_metrics
from ..evaluation.predict import predict_logits
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, seed_everything, set_rng_state
from .device import autocast_context, resolve_device, unwrap
from .losses import distillation_loss, mixup, soft_targets, spec_augment
from .optim import METRIC_MODES, Schedule, make_loss, make_optimizer
from .teacher import BatchTeacher, RecordingTeacher

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    history: list = field(default_factory=list)  # one row an epoch (history.csv)
    best_epoch: int = -1
    best_metric: float = float("nan")
    stopped_early: bool = False
    epochs_run: int = 0
    bad_epochs: int = 0  # epochs since the last improvement


def train_loop(model: nn.Module, train_loader, val_loader, cfg: TrainingConfig, labels: list[str], *,
               targets: list[int] | None = None, run_dir: str | Path | None = None, resume: bool = False,
               teacher: BatchTeacher | RecordingTeacher | None = None, progress: bool | None = None, writer=None,
               is_main: bool = True, reduce_metrics=None) -> TrainResult:
    """Train ``model``; with ``run_dir``, write ``checkpoints/best.pt``, ``checkpoints/last.pt`` and ``history.csv``.

    ``targets``: the training items' class indices (balanced class weights and L-BFGS need them).
    ``resume=True`` continues from ``run_dir/checkpoints/last.pt`` exactly where it stopped. A
    ``BatchTeacher`` runs on each batch; a ``RecordingTeacher``'s logits come as ``batch[3]``.
    ``progress``: bars on a terminal (None), always (True) or never (False); epoch lines are logged.
    ``is_main``: only the main process writes (DDP rank 0); ``reduce_metrics(logits, targets)``
    gathers validation outputs from every rank.
    """
    device = resolve_device(cfg.device)
    model.to(device)
    if isinstance(teacher, BatchTeacher):  # it runs on the student's batches, where they are
        teacher.model.to(device)
    seed_everything(cfg.seed)
    criterion = make_loss(cfg, targets, len(labels), device)
    optimizer = make_optimizer(model, cfg, targets)
    schedule = Schedule(optimizer, cfg, _steps_per_epoch(train_loader))
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and device.type == "cuda")
    ckpt_dir = Path(run_dir) / "checkpoints" if run_dir is not None else None
    result = TrainResult()
    if resume and ckpt_dir is not None and (ckpt_dir / "last.pt").exists():
        result = _restore(ckpt_dir / "last.pt", model, optimizer, schedule, scaler, device)
        if _should_stop(result, cfg) or result.epochs_run >= cfg.epochs:
            result.stopped_early = _should_stop(result, cfg)
            return result
        log.info("resuming from epoch %d of %d (%s)", result.epochs_run + 1, cfg.epochs, ckpt_dir / "last.pt")

    for epoch in range(result.epochs_run, cfg.epochs):
        _start_epoch(train_loader, cfg.seed * 100003 + epoch, epoch)
        model.train()
        t_epoch = time.perf_counter()
        if cfg.optimizer == "lbfgs":
            train_loss, wait = lbfgs_epoch(model, train_loader, optimizer, criterion, cfg, teacher, device,
                                           len(labels), epoch, targets), 0.0
        else:
            train_loss, wait = minibatch_epoch(model, train_loader, optimizer, criterion, schedule, scaler, cfg,
                                               teacher, device, len(labels), epoch, _bar(cfg, epoch, train_loader,
                                                                                         progress, is_main))
        train_seconds = time.perf_counter() - t_epoch
        val, val_loss = validate(model, val_loader, labels, device, cfg.amp, reduce_metrics)
        metric = val_loss if cfg.early_stopping.metric == "loss" else val[cfg.early_stopping.metric]
        schedule.after_epoch(metric)
        row = {"epoch": epoch + 1, "train_loss": round(train_loss, 6), "val_loss": round(val_loss, 6),
               "val_uar": round(val["uar"], 6), "val_wa": round(val["wa"], 6), "val_macro_f1": round(val["macro_f1"], 6),
               "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.perf_counter() - t_epoch, 3),
               "data_wait_share": round(wait / train_seconds, 4) if train_seconds > 0 else 0.0}
        improved = _record(result, row, metric, cfg)
        if is_main:
            _report_epoch(row, improved, writer)
            if ckpt_dir is not None:
                _save(ckpt_dir, model, optimizer, schedule, scaler, result, improved, metric, cfg)
                atomic_write_csv(Path(run_dir) / "history.csv", result.history, list(row))
        if _should_stop(result, cfg):
            result.stopped_early = True
            break
    return result


def minibatch_epoch(model, loader, optimizer, criterion, schedule: Schedule, scaler, cfg: TrainingConfig, teacher,
                    device, n_classes: int, epoch: int, bar) -> tuple[float, float]:
    """One pass over the training batches; ``(mean training loss, seconds spent waiting for data)``."""
    total_loss, n_seen, wait = 0.0, 0, 0.0
    t_wait = time.perf_counter()
    for batch in loader:
        wait += time.perf_counter() - t_wait
        loss, kd, n = batch_losses(model, batch, criterion, cfg, teacher, device, n_classes, epoch)
        if kd is not None:
            loss = (1 - cfg.distill.weight) * loss + cfg.distill.weight * kd
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        schedule.after_batch()
        total_loss += loss.item() * n
        n_seen += n
        bar.update(1)
        bar.set_postfix(loss=f"{total_loss / n_seen:.3f}")
        t_wait = time.perf_counter()
    bar.close()
    return total_loss / max(n_seen, 1), wait


def batch_losses(model, batch, criterion, cfg: TrainingConfig, teacher, device, n_classes: int, epoch: int):
    """Augment one training batch and return ``(loss, distillation loss or None, batch size)``.

    ``loss`` is the criterion's weighted mean over the batch's labelled items (distillation's is a plain mean
    over all, unlabelled recordings included).
    """
    x, y, lengths, *extra = batch
    x, y, lengths = x.to(device, non_blocking=True), y.to(device), lengths.to(device)
    a = cfg.augment
    if a.specaugment:
        x = spec_augment(x, lengths, a.freq_masks, a.freq_width, a.time_masks, a.time_width)
    targets = soft_targets(y, n_classes) if a.mixup > 0 else y
    if a.mixup > 0:
        x, targets, lengths = mixup(x, targets, lengths, a.mixup)
    kd = None
    with autocast_context(device, cfg.amp):
        logits = model(x, lengths)
        labelled = y >= 0  # unlabelled recordings (-1) only have the teacher's outputs: no hard-label term
        if bool(labelled.all()):
            loss = criterion(logits, targets)
        else:
            loss = criterion(logits[labelled], targets[labelled]) if bool(labelled.any()) else logits.sum() * 0.0
        if teacher is not None and cfg.distill.weight > 0:
            teacher_logits = torch.stack(extra[0]).to(device) if isinstance(teacher, RecordingTeacher) \
                else teacher(x, lengths)
            kd = distillation_loss(logits, teacher_logits, cfg.distill.temperature)
    if not torch.isfinite(loss):
        raise UsageError(f"training diverged: loss is {loss.item()} at epoch {epoch + 1} "
                         "(lower training.lr, or check the features for extreme values)")
    return loss, kd, len(y)


def lbfgs_epoch(model, loader, optimizer, criterion, cfg: TrainingConfig, teacher, device, n_classes: int,
                epoch: int, targets: list[int]) -> float:
    """One L-BFGS step (up to ``optim.LBFGS_ITERS_PER_EPOCH`` iterations) on the whole training set.

    The objective is the full-batch weighted mean loss over the labelled items (distillation, a mean
    over every item, unlabelled ones too, mixed in as in the minibatch path) plus ``weight_decay / 2 *
    ||W||^2`` over weight matrices, not biases: for a linear model it is exactly scikit-learn's
    ``LogisticRegression(C=1 / (weight_decay * n))``. The step's batches (and so their crops) are
    loaded once and held in memory (a full-batch method is for data that fits); every evaluation
    reseeds the RNGs, so dropout and SpecAugment masks are the same too and the line search sees one
    function. Gradient clipping does not apply. Returns the data term at the step's start.
    """
    targets = torch.as_tensor(list(targets), dtype=torch.long)
    class_weight = criterion.weight.cpu() if criterion.weight is not None else None
    weight_total = float(class_weight[targets].sum() if class_weight is not None else len(targets))
    decayed = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    data_terms = []
    batches = list(loader)  # loaded once a step (the RNGs were seeded for this epoch): same crops each pass
    n_total = float(sum(len(batch[1]) for batch in batches))  # distillation: every item, unlabelled ones too
    seed = cfg.seed * 100003 + epoch

    def closure():
        seed_everything(seed)  # the same dropout and SpecAugment masks in every evaluation of the step
        optimizer.zero_grad(set_to_none=True)
        data_term = 0.0
        for batch in batches:
            loss, kd, n = batch_losses(model, batch, criterion, cfg, teacher, device, n_classes, epoch)
            # the batch's weighted mean times its share of the total weight: exactly the full-batch mean
            labelled = batch[1][batch[1] >= 0]  # unlabelled items (-1): in the distillation term alone
            weight_sum = float(class_weight[labelled.cpu()].sum() if class_weight is not None else len(labelled))
            part = loss * (weight_sum / weight_total)
            if kd is not None:
                part = (1 - cfg.distill.weight) * part + cfg.distill.weight * kd * (n / n_total)
            part.backward()
            data_term += float(part.detach())
        penalty = 0.5 * cfg.weight_decay * sum((p * p).sum() for p in decayed) if decayed and cfg.weight_decay else None
        if penalty is not None:
            penalty.backward()
        data_terms.append(data_term)
        return torch.tensor(data_term + (float(penalty.detach()) if penalty is not None else 0.0))

    optimizer.step(closure)
    return data_terms[0]


def validate(model, loader, labels, device, amp: bool, reduce_metrics=None) -> tuple[dict, float]:
    """Validation metrics and loss (NaN figures when there is no validation split)."""
    logits, targets = predict_logits(model, loader if loader is not None else (), device, amp)
    if reduce_metrics is not None and loader is not None:
        logits, targets = reduce_metrics(logits, targets)
    if not len(targets):
        return {"uar": float("nan"), "wa": float("nan"), "macro_f1": float("nan")}, float("nan")
    metrics = classification_metrics(targets.numpy(), logits.argmax(1).numpy(), labels)
    return metrics, float(torch.nn.functional.cross_entropy(logits, targets))


# -- bookkeeping: early stopping, checkpoints, resume ----------------------------------------
def _record(result: TrainResult, row: dict, metric: float, cfg: TrainingConfig) -> bool:
    """Append the epoch's row and update the early-stopping state; whether the epoch improved."""
    result.history.append(row)
    result.epochs_run = row["epoch"]
    best, es = result.best_metric, cfg.early_stopping
    better = metric > best + es.min_delta if METRIC_MODES[es.metric] == "max" else metric < best - es.min_delta
    if math.isnan(best) or better:
        result.best_epoch, result.best_metric, result.bad_epochs = row["epoch"], float(metric), 0
        return True
    result.bad_epochs += 1
    return False


def _should_stop(result: TrainResult, cfg: TrainingConfig) -> bool:
    return cfg.early_stopping.patience > 0 and result.bad_epochs >= cfg.early_stopping.patience


def _save(ckpt_dir: Path, model, optimizer, schedule: Schedule, scaler, result: TrainResult, improved: bool,
          metric: float, cfg: TrainingConfig) -> None:
    model_state = unwrap(model).state_dict()
    epoch = result.epochs_run - 1
    if improved:
        save_checkpoint(ckpt_dir / "best.pt", {"model": model_state, "epoch": epoch,
                                               "metric": cfg.early_stopping.metric, "value": float(metric)})
    save_checkpoint(ckpt_dir / "last.pt", {
        "model": model_state, "optimizer": optimizer.state_dict(), "scheduler": schedule.state_dict(),
        "scaler": scaler.state_dict() if scaler.is_enabled() else None, "epoch": epoch,
        "history": result.history, "best_epoch": result.best_epoch, "best_metric": result.best_metric,
        "bad_epochs": result.bad_epochs, "rng": rng_state(), "config": asdict(cfg)})


def _restore(path: Path, model, optimizer, schedule: Schedule, scaler, device) -> TrainResult:
    state = load_checkpoint(path, map_location=device)
    unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state.get("scheduler"))
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return TrainResult(list(state["history"]), int(state["best_epoch"]), float(state["best_metric"]),
                       epochs_run=int(state["epoch"]) + 1, bad_epochs=int(state["bad_epochs"]))


# -- small helpers ---------------------------------------------------------------------------
def _steps_per_epoch(loader) -> int:
    try:
        return len(loader)
    except TypeError:  # an iterable dataset of unknown length
        return 1


def _start_epoch(loader, seed: int, epoch: int) -> None:
    """Reseed everything an epoch draws from (RNGs, the loader's shuffling, samplers and datasets that
    shuffle by epoch), so epoch k is the same whether or not the run was cut before it."""
    seed_everything(seed)
    if loader.generator is not None:
        loader.generator.manual_seed(seed)
    for part in (loader.sampler, loader.dataset):
        if hasattr(part, "set_epoch"):  # DistributedSampler, StreamingDataset
            part.set_epoch(epoch)


def _bar(cfg: TrainingConfig, epoch: int, loader, progress, is_main):
    return progress_bar(_steps_per_epoch(loader), f"epoch {epoch + 1}/{cfg.epochs}", progress, "batch", is_main)


def _report_epoch(row: dict, improved: bool, writer) -> None:
    val = (f"val loss {row['val_loss']:.4f}  val UAR {row['val_uar']:.3f}  WA {row['val_wa']:.3f}"
           if row["val_uar"] == row["val_uar"] else "no validation split")
    log.info("epoch %3d  loss %.4f  %s  %.1fs%s", row["epoch"], row["train_loss"], val, row["seconds"],
             " *" if improved else "")
    if writer is not None:
        for key in ("train_loss", "val_loss", "val_uar", "val_wa", "val_macro_f1", "lr"):
            writer.add_scalar(key, row[key], row["epoch"])
        writer.flush()
