"""``layer_sum``: a SUPERB-style head over a pretrained encoder's hidden states.

A learned softmax-weighted sum of the states (which layers matter is learned on the training data,
not chosen on test folds), then, for frame-level states (``pooling: none``), attentive pooling over
valid frames, then a small MLP. Input ``(B, states x D, T)``: the encoder feature's layer-major rows;
``T = 1`` for pooled states (each state's mean and standard deviation: ``D`` = 2 x width).
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.errors import UsageError
from .common import AttentionPooling, full_lengths, length_mask
from .registry import register_model


def check_states(features_type: str, features_params: dict, model_params: dict) -> None:
    """Refuse, before any file is read, ``states`` other than the number of hidden states an encoder feature holds
    (a stem has 1, the offline encoder 5, another checkpoint its layers + 1), naming the value to set."""
    if features_type != "encoder":
        return
    from ..features.encoders.backbones import model_info
    from ..features.encoders.feature import ENCODER_DEFAULTS, layer_indices

    params = {**ENCODER_DEFAULTS, **features_params}
    n_states = model_info(str(params["model"]))["layers"] + 1
    chosen = layer_indices(params, n_states)
    want, states = n_states if chosen is None else len(chosen), model_params.get("states", 5)
    if states != want:
        raise UsageError(f"model layer_sum: model.params.states is {states}, but the features hold {want} hidden "
                         f"state(s) of {params['model']!r} (layers {params['layers']!r}): set model.params.states={want}")


@register_model("layer_sum", presets={"base": {"hidden": (256,)}, "tiny": {"hidden": (64,)}}, check=check_states)
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
