"""``resnet``: a 2-D residual CNN over (features x frames)."""

from __future__ import annotations

import torch
from torch import nn

from .common import conv_lengths, full_lengths, length_mask, masked_mean_std
from .registry import register_model


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x, mask):
        """``x (B, C, F, T)``; ``mask (B, 1, 1, T_out)`` zeroes the padding of the output frames."""
        y = torch.relu(self.bn1(self.conv1(x))) * mask
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x)) * mask


@register_model("resnet", presets={"base": {"channels": (32, 64, 128, 256)}, "tiny": {"channels": (16, 32, 64, 96)}})
class ResNetClassifier(nn.Module):
    """Residual CNN: stem, one stride-2 stage a width in ``channels``, frequency average,
    mean+std pooling over valid frames, linear classifier. ``(B, F, T)`` -> ``(B, n_classes)``."""

    def __init__(self, n_classes: int, n_features: int, channels=(32, 64, 128, 256), blocks_per_stage: int = 1,
                 dropout: float = 0.3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, channels[0], 3, padding=1, bias=False), nn.BatchNorm2d(channels[0]),
                                  nn.ReLU())
        stages, c_in = [], channels[0]
        for c in channels:
            blocks = [BasicBlock(c_in, c, stride=2)] + [BasicBlock(c, c, 1) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.ModuleList(blocks))
            c_in = c
        self.stages = nn.ModuleList(stages)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * channels[-1], n_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        lengths = full_lengths(x, lengths)
        # Zero the padding after every stage: a padded item then gives exactly what it gives alone.
        h = self.stem(x[:, None]) * length_mask(lengths, x.shape[-1])[:, None, None, :]
        for stage in self.stages:
            lengths = conv_lengths(lengths, 2)
            mask = length_mask(lengths, (h.shape[-1] - 1) // 2 + 1)[:, None, None, :].to(h.dtype)
            for block in stage:
                h = block(h, mask)
        h = h.mean(dim=2)  # (B, C, T')
        pooled = masked_mean_std(h, length_mask(lengths.clamp(min=1), h.shape[-1]))
        return self.head(self.dropout(pooled))
