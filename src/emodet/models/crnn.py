"""``crnn``: a convolutional front with a self-attention back."""

from __future__ import annotations

import math

import torch
from torch import nn

from .common import AttentionPooling, conv_lengths, full_lengths, length_mask
from .registry import register_model


class SelfAttentionLayer(nn.Module):
    """Pre-norm Transformer encoder layer with a padding mask, written out so it exports to ONNX."""

    def __init__(self, dim: int, heads: int = 4, dropout: float = 0.1):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} must be divisible by heads={heads}")
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d // self.heads)
        scores = scores.masked_fill(~mask[:, None, None, :], -1e4)
        attn = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(b, t, d)
        h = h + self.dropout(self.out(attn))
        return h + self.dropout(self.ff(self.norm2(h)))


@register_model("crnn", presets={"base": {"channels": (32, 64, 128), "hidden": 128, "layers": 2},
                                 "tiny": {"channels": (16, 32, 48), "hidden": 64, "layers": 1}})
class CRNNClassifier(nn.Module):
    """Conv blocks (frequency pooled by 2 each, time strided by 2 in the first two), then pre-norm
    self-attention layers over valid frames, attention pooling, classifier.

    A recurrent back (LSTM/GRU) after the strided front does not export: torch 2.13's exporter
    specialises the number of frames of an LSTM whose input length is derived from the input's
    (the ``lstm`` family, whose LSTM sees the input frames directly, exports fine)."""

    def __init__(self, n_classes: int, n_features: int, channels=(32, 64, 128), hidden: int = 128,
                 layers: int = 2, heads: int = 4, dropout: float = 0.3):
        super().__init__()
        blocks, c_in, freq = [], 1, n_features
        self.time_strides = []
        for i, c in enumerate(channels):
            t_stride = 2 if i < 2 else 1
            # Time is downsampled by a strided convolution (as in resnet), frequency by pooling.
            blocks.append(nn.ModuleList([nn.Sequential(nn.Conv2d(c_in, c, 3, stride=(1, t_stride), padding=1, bias=False),
                                                       nn.BatchNorm2d(c), nn.ReLU()), nn.MaxPool2d((2, 1), ceil_mode=True)]))
            self.time_strides.append(t_stride)
            c_in, freq = c, math.ceil(freq / 2)
        self.conv = nn.ModuleList(blocks)
        self.proj = nn.Linear(c_in * freq, hidden)
        self.attn = nn.ModuleList(SelfAttentionLayer(hidden, heads, dropout) for _ in range(layers))
        self.pool = AttentionPooling(hidden)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        lengths = full_lengths(x, lengths)
        h = x[:, None]
        for (conv, pool), s in zip(self.conv, self.time_strides):  # zero the padding after each block
            lengths = conv_lengths(lengths, s)
            h = conv(h)
            h = pool(h * length_mask(lengths, h.shape[-1])[:, None, None, :].to(h.dtype))  # (B, C, F', T')
        h = self.proj(h.permute(0, 3, 1, 2).flatten(2))  # (B, T', C * F')
        mask = length_mask(lengths.clamp(min=1), h.shape[1])
        for layer in self.attn:
            h = layer(h, mask)
        return self.head(self.dropout(self.pool(h, mask)))
