"""``fc``: a multilayer perceptron over pooled frame statistics or over functionals."""

from __future__ import annotations

import torch
from torch import nn

from .common import full_lengths, length_mask, masked_mean_std
from .registry import register_model


@register_model("fc", presets={"base": {"hidden": (256, 128)}, "tiny": {"hidden": (64,)}})
class FCClassifier(nn.Module):
    """MLP over the mean and standard deviation of each feature over valid frames.

    ``(B, F, T)`` -> logits ``(B, n_classes)``. For functionals (``T == 1``, e.g. ``egemaps``,
    ``compare``) pass ``pooling="mean"`` so only the values themselves are used.
    """

    def __init__(self, n_classes: int, n_features: int, hidden=(256, 128), dropout: float = 0.3,
                 pooling: str = "meanstd"):
        super().__init__()
        if pooling not in ("meanstd", "mean"):
            raise ValueError(f"pooling must be 'meanstd' or 'mean', got {pooling!r}")
        self.pooling = pooling
        layers, size = [], n_features * (2 if pooling == "meanstd" else 1)
        for width in hidden:
            layers += [nn.Linear(size, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Dropout(dropout)]
            size = width
        layers.append(nn.Linear(size, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        mask = length_mask(full_lengths(x, lengths), x.shape[-1])
        pooled = masked_mean_std(x, mask)
        if self.pooling == "mean":
            pooled = pooled[:, : x.shape[1]]
        return self.net(pooled)
