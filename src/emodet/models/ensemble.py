"""``EnsembleModel``: several models as one, the weighted mean of their probabilities (or logits).

In torch so that an ensemble exports to one ONNX graph; ``emodet.core.fusion`` is the same
arithmetic in numpy for the runtime and the benchmarks.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.errors import UsageError
from ..core.fusion import normalized_weights


class EnsembleModel(nn.Module):
    """``(x, lengths) -> logits`` of the weighted mean of members' probabilities (``combine="prob"``,
    returned as log-probabilities, so softmax gives the averaged probabilities) or of their logits."""

    def __init__(self, members: list[nn.Module], weights: list[float] | None = None, combine: str = "prob"):
        super().__init__()
        if combine not in ("prob", "logit"):
            raise UsageError(f"ensemble combine {combine!r}: valid values are prob, logit")
        w = normalized_weights(weights, len(members), "ensemble")
        self.members = nn.ModuleList(members)
        self.register_buffer("weights", torch.tensor(w, dtype=torch.float32), persistent=False)
        self.combine = combine

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        outs = torch.stack([m(x, lengths).float() for m in self.members])  # (M, B, C)
        w = self.weights[:, None, None]
        if self.combine == "logit":
            return (w * outs).sum(0)
        probs = (w * torch.softmax(outs, dim=-1)).sum(0)
        return torch.log(probs.clamp(min=1e-12))
