"""``cnn``: a plain 2-D CNN over (features x frames): conv-BN-ReLU-max-pool blocks, global pooling.

The small CNN that speech emotion papers use as their from-scratch baseline: each block halves
both axes with a 2x2 max-pool (translation tolerance in time and frequency, which strided
convolutions lack), then the frequency axis is averaged and valid frames are mean-pooled.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import conv_lengths, full_lengths, length_mask, masked_mean, masked_mean_std
from .registry import register_model


@register_model("cnn", presets={"base": {"channels": (32, 64, 128, 256)}, "tiny": {"channels": (16, 32, 64, 128)}})
class PlainCNN(nn.Module):
    """``(B, F, T)`` -> ``(B, n_classes)``. ``pooling``: ``mean`` over valid frames or ``meanstd``."""

    def __init__(self, n_classes: int, n_features: int, channels=(32, 64, 128, 256), dropout: float = 0.3,
                 pooling: str = "mean"):
        super().__init__()
        if pooling not in ("mean", "meanstd"):
            raise ValueError(f"pooling must be 'mean' or 'meanstd', got {pooling!r}")
        blocks, c_in = [], 1
        for c in channels:
            blocks.append(nn.Sequential(nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()))
            c_in = c
        self.blocks = nn.ModuleList(blocks)
        # ceil_mode: a frame left over at the end is pooled alone, as it would be without padding
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c_in * (2 if pooling == "meanstd" else 1), n_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        lengths = full_lengths(x, lengths)
        h = x[:, None]
        for block in self.blocks:
            # outputs are >= 0 after ReLU and padding is zeroed, so max-pooling never picks padding over a
            # valid frame: an item gives the same result alone as padded in a batch
            h = block(h) * length_mask(lengths, h.shape[-1])[:, None, None, :].to(h.dtype)
            h = self.pool(h)
            lengths = conv_lengths(lengths, 2)
        h = h.mean(dim=2)  # (B, C, T')
        mask = length_mask(lengths.clamp(min=1), h.shape[-1])
        pooled = masked_mean_std(h, mask) if self.pooling == "meanstd" else masked_mean(h, mask)
        return self.head(self.dropout(pooled))
