"""Losses and batch augmentations: class weights, focal loss, distillation, SpecAugment, mixup."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def balanced_class_weights(targets, n_classes: int) -> torch.Tensor:
    """``n / (n_classes * count_c)`` per class (sklearn's "balanced"); absent classes get 0."""
    counts = torch.bincount(torch.as_tensor(list(targets), dtype=torch.long), minlength=n_classes).float()
    weights = torch.where(counts > 0, counts.sum() / (n_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    return weights


def soft_targets(targets: torch.Tensor, n_classes: int, label_smoothing: float = 0.0) -> torch.Tensor:
    """Class indices ``(B,)`` or probabilities ``(B, C)`` -> probabilities, smoothed by ``label_smoothing``."""
    if targets.dim() == 1:
        targets = F.one_hot(targets, n_classes).float()
    if label_smoothing:
        targets = targets * (1 - label_smoothing) + label_smoothing / n_classes
    return targets


class FocalLoss(torch.nn.Module):
    """Focal loss ``-sum_c t_c w_c (1 - p_c)^gamma log p_c``, averaged with the weights' normalisation.

    With ``gamma=0`` it is cross-entropy (``F.cross_entropy`` with the same ``weight`` and
    ``label_smoothing``), so one implementation serves both. Accepts class indices or soft targets.
    """

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.gamma = float(gamma)
        self.label_smoothing = float(label_smoothing)
        self.register_buffer("weight", weight if weight is not None else None, persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        n_classes = logits.shape[1]
        hard = targets.dim() == 1
        t = soft_targets(targets, n_classes, self.label_smoothing)
        log_p = F.log_softmax(logits, dim=1)
        focal = (1 - log_p.exp()).pow(self.gamma) if self.gamma else 1.0
        w = self.weight if self.weight is not None else torch.ones(n_classes, device=logits.device)
        per_item = -(t * w * focal * log_p).sum(1)
        if hard:  # PyTorch's convention: divide by the weight of each item's true class
            norm = w[targets].sum()
        else:
            norm = (t * w).sum()
        return per_item.sum() / norm.clamp(min=1e-12)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 KL(softmax(teacher / T) || softmax(student / T))``, mean over the batch (Hinton et al.)."""
    t = float(temperature)
    teacher = F.softmax(teacher_logits.float() / t, dim=1)
    student = F.log_softmax(student_logits.float() / t, dim=1)
    return F.kl_div(student, teacher, reduction="batchmean") * t * t


def spec_augment(x: torch.Tensor, lengths: torch.Tensor, freq_masks: int = 2, freq_width: int = 8,
                 time_masks: int = 2, time_width: int = 20) -> torch.Tensor:
    """Zero random frequency bands and time spans of ``x (B, F, T)`` within each item's length (a copy)."""
    x = x.clone()
    b, f, _ = x.shape
    for i in range(b):
        for _ in range(freq_masks):
            w = int(torch.randint(0, freq_width + 1, (1,)))
            if w and w < f:
                s = int(torch.randint(0, f - w + 1, (1,)))
                x[i, s:s + w, :] = 0
        n = int(lengths[i])
        for _ in range(time_masks):
            w = int(torch.randint(0, min(time_width, max(n // 5, 1)) + 1, (1,)))
            if w and w < n:
                s = int(torch.randint(0, n - w + 1, (1,)))
                x[i, :, s:s + w] = 0
    return x


def mixup(x: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor, alpha: float):
    """Mix each item with another of the batch: returns ``x, soft targets, lengths``."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(x.shape[0])
    x = lam * x + (1 - lam) * x[perm]
    targets = lam * targets + (1 - lam) * targets[perm]
    return x, targets, torch.maximum(lengths, lengths[perm])
