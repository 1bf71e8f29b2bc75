"""``layer_sum``: a SUPERB-style head over a pretrained encoder's hidden states.

A learned softmax-weighted sum of the states (which layers matter is learned on the training data,
not chosen on test folds), then, for frame-level states (``pooling: none``), attentive pooling over
valid frames, then a small MLP. Input ``(B, states x D, T)``: the encoder feature's layer-major rows;
``T = 1`` for pooled states (each state's mean and standard deviation: ``D`` = 2 x width).
"""

from __future__ import annotations

import torch
from torch import nn

from .common import AttentionPooling, full_lengths, length_mask
from .registry import register_model


@register_model("layer_sum", presets={"base": {"hidden": (256,)}, "tiny": {"hidden": (64,)}})
class LayerSum(nn.Module):
    """``(B, states x D, T)`` -> logits ``(B, n_classes)``; ``states``: how many hidden states the rows hold."""

    def __init__(self, n_classes: int, n_features: int, states: int = 5, hidden=(256,), dropout: float = 0.2):
        super().__init__()
        if states < 1 or n_features % states:
            raise ValueError(f"{n_features} features do not split into {states} hidden states (layers)")
        self.states, self.width = states, n_features // states
        self.layer_logits = nn.Parameter(torch.zeros(states))
        self.pool = AttentionPooling(self.width)
        layers, size = [], self.width
        for h in hidden:
            layers += [nn.Linear(size, h), nn.ReLU(), nn.Dropout(dropout)]
            size = h
        self.head = nn.Sequential(*layers, nn.Linear(size, n_classes))

    def layer_weights(self) -> torch.Tensor:
        """The learned weight of each hidden state (they sum to 1)."""
        return torch.softmax(self.layer_logits, 0)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        b, _, t = x.shape
        states = x.reshape(b, self.states, self.width, t)
        mixed = (states * self.layer_weights()[None, :, None, None]).sum(1)  # (B, D, T)
        if t == 1:
            return self.head(mixed[:, :, 0])
        mask = length_mask(full_lengths(x, lengths), t)
        return self.head(self.pool(mixed.transpose(1, 2), mask))
