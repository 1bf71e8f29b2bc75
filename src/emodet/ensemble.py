"""Ensembles of runs: average probabilities (or logits) of several models as one model.

An ensemble directory holds ``ensemble.json`` (``runs``, ``weights``, ``combine``) and works
wherever a run directory does as a predictor: as a distillation teacher, for evaluation and
for export as one ONNX model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .errors import UsageError


class EnsembleModel(nn.Module):
    """``(x, lengths) -> logits`` of the weighted mean of members' probabilities (``combine="prob"``,
    returned as log-probabilities, so softmax gives the averaged probabilities) or of their logits."""

    def __init__(self, members: list[nn.Module], weights: list[float] | None = None, combine: str = "prob"):
        super().__init__()
        if not members:
            raise UsageError("an ensemble needs at least one member")
        if combine not in ("prob", "logit"):
            raise UsageError(f"ensemble combine {combine!r}: valid values are prob, logit")
        weights = [1.0] * len(members) if weights is None else [float(w) for w in weights]
        if len(weights) != len(members) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise UsageError(f"ensemble weights {weights}: need one non-negative weight a member, not all zero")
        self.members = nn.ModuleList(members)
        self.register_buffer("weights", torch.tensor(weights) / sum(weights), persistent=False)
        self.combine = combine

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        outs = torch.stack([m(x, lengths).float() for m in self.members])  # (M, B, C)
        w = self.weights[:, None, None]
        if self.combine == "logit":
            return (w * outs).sum(0)
        probs = (w * torch.softmax(outs, dim=-1)).sum(0)
        return torch.log(probs.clamp(min=1e-12))


def load_predictor(path: str | Path, device="cpu") -> nn.Module:
    """The model of a run directory or an ensemble directory, in eval mode."""
    from .experiment import load_run

    path = Path(path)
    if (path / "ensemble.json").is_file():
        spec = json.loads((path / "ensemble.json").read_text())
        members = [load_run(run, device)[0] for run in spec["runs"]]
        return EnsembleModel(members, spec.get("weights"), spec.get("combine", "prob")).to(device).eval()
    return load_run(path, device)[0]
