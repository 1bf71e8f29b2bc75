"""``dscnn``: a depthwise-separable CNN for the edge (MobileNet's blocks over features x frames).

A strided stem, then blocks of a depthwise 3x3 convolution (one filter a channel) and a pointwise 1x1
convolution, each with batch norm and ReLU, halving frequency and time where asked; the frequency axis
is averaged and valid frames pooled. About a tenth of a plain CNN's multiply-adds for the same widths.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import centre_bands, conv_lengths, full_lengths, length_mask, masked_mean_std
from .registry import register_model


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.stride = stride
        self.depthwise = nn.Sequential(nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False),
                                       nn.BatchNorm2d(c_in), nn.ReLU())
        self.pointwise = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(h))


@register_model("dscnn", presets={"base": {"channels": (32, 64, 128, 256)}, "tiny": {"channels": (32, 64, 96, 128)}})
class DepthwiseSeparableCNN(nn.Module):
    """``(B, F, T)`` -> ``(B, n_classes)``; a stem of stride ``stem_stride`` (2; 4 quarters the blocks' work), then
    one block a channel width (stride 2 from the second on), mean and standard deviation of the valid frames.
    ``centre_bands``: first take each item's own mean of every band over its valid frames away (the training
    crop's, or the whole recording's in evaluation and deployment): a gain on log-mel goes exactly, a fixed
    microphone colouring nearly (the 80 dB floor moves with it); the level and spectral tilt of the recording
    go with them. For frame-level features (log-mel, MFCC): on one-frame features it leaves zeros."""

    def __init__(self, n_classes: int, n_features: int, channels=(32, 64, 128, 256), dropout: float = 0.3,
                 stem_stride: int = 2, centre_bands: bool = False):
        super().__init__()
        if not isinstance(centre_bands, bool):  # a quoted "false" would be true
            raise ValueError(f"centre_bands must be true or false, got {centre_bands!r}")
        self.stem_stride, self.centre = int(stem_stride), centre_bands
        self.stem = nn.Sequential(nn.Conv2d(1, channels[0], 3, stride=self.stem_stride, padding=1, bias=False),
                                  nn.BatchNorm2d(channels[0]), nn.ReLU())
        self.blocks = nn.ModuleList(_Block(a, b, 1 if i == 0 else 2)
                                    for i, (a, b) in enumerate(zip(channels, channels[1:] + channels[-1:])))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * channels[-1], n_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        lengths = full_lengths(x, lengths)
        if self.centre:
            x = centre_bands(x, lengths)
        h = self.stem(x[:, None])
        lengths = conv_lengths(lengths, self.stem_stride)
        for block in self.blocks:
            # padding zeroed after every block: an item gives the same result alone as padded in a batch
            h = block(h * length_mask(lengths, h.shape[-1])[:, None, None, :].to(h.dtype))
            lengths = conv_lengths(lengths, block.stride)
        h = h.mean(dim=2)  # (B, C, T')
        mask = length_mask(lengths.clamp(min=1), h.shape[-1])
        return self.head(self.dropout(masked_mean_std(h, mask)))
