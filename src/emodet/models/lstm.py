"""``lstm``: a bidirectional LSTM with attention pooling that respects lengths."""

from __future__ import annotations

import torch
from torch import nn

from .common import AttentionPooling, BiRecurrent, full_lengths, length_mask
from .registry import register_model


@register_model("lstm", presets={"base": {"hidden": 128, "layers": 2}, "tiny": {"hidden": 64, "layers": 1}})
class LSTMClassifier(nn.Module):
    """Frame projection, bidirectional LSTM, attention pooling over valid frames, linear classifier.

    ``(B, F, T)`` -> ``(B, n_classes)``; padding never reaches a valid frame (see ``BiRecurrent``).
    """

    def __init__(self, n_classes: int, n_features: int, hidden: int = 128, layers: int = 2, dropout: float = 0.3):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(n_features, hidden), nn.LayerNorm(hidden), nn.ReLU(), nn.Dropout(dropout))
        self.rnn = BiRecurrent(hidden, hidden, layers, "lstm", dropout)
        self.pool = AttentionPooling(2 * hidden)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * hidden, n_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        lengths = full_lengths(x, lengths)
        h = self.rnn(self.proj(x.transpose(1, 2)), lengths)
        pooled = self.pool(h, length_mask(lengths, h.shape[1]))
        return self.head(self.dropout(pooled))
