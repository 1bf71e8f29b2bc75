"""Ensembles of runs: average probabilities (or logits) of several models as one model.

An ensemble directory holds ``ensemble.json`` (``runs``, ``weights``, ``combine``, and the
shared labels, features and normalisation) and works wherever a run directory does as a
predictor: as a distillation teacher, for evaluation and for export as one ONNX model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .errors import UsageError
from .io import atomic_write_json


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


def run_info(run_dir: Path) -> dict:
    """Labels, features, normalisation, manifest and data root of a finished run (else a UsageError)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file() or not (run_dir / "metrics.json").is_file():
        raise UsageError(f"{run_dir} is not a finished run directory (it needs config.yaml and metrics.json; "
                         "train one with `emodet train`)")
    import yaml

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    m = json.loads((run_dir / "metrics.json").read_text())
    labels = m.get("labels") or m["val"]["labels"]
    return {"labels": labels, "feature": m["features"]["type"], "feature_params": m["features"]["params"],
            "sample_rate": m["features"]["sample_rate"], "normalizer": m["normalizer"],
            "cache_dir": cfg["features"]["cache_dir"], "plugins": cfg["features"].get("plugins", []),
            "manifest": run_dir / "manifest.csv", "data_root": cfg["data"]["root"], "input_shape": m["model"]["input_shape"]}


def training_speakers(path: str | Path) -> set[str]:
    """Speakers a run (or any member of an ensemble) saw in training or validation."""
    import csv

    path = Path(path)
    runs = json.loads((path / "ensemble.json").read_text())["runs"] if (path / "ensemble.json").is_file() else [path]
    seen: set[str] = set()
    for run in runs:
        manifest = Path(run) / "manifest.csv"
        if manifest.is_file():
            with open(manifest, newline="", encoding="utf-8") as fh:
                seen |= {r["speaker"] for r in csv.DictReader(fh) if r.get("split") in ("train", "val")}
    return seen


def predictor_info(path: str | Path) -> dict:
    """Labels, features, normalisation, manifest and data root of a run or ensemble directory."""
    path = Path(path)
    if (path / "ensemble.json").is_file():
        spec = json.loads((path / "ensemble.json").read_text())
        info = run_info(Path(spec["runs"][0]))
        return info
    return run_info(path)


def load_predictor(path: str | Path, device="cpu") -> nn.Module:
    """The model of a run directory or an ensemble directory, in eval mode."""
    from .experiment import load_run

    path = Path(path)
    if (path / "ensemble.json").is_file():
        spec = json.loads((path / "ensemble.json").read_text())
        members = [load_run(run, device)[0] for run in spec["runs"]]
        return EnsembleModel(members, spec.get("weights"), spec.get("combine", "prob")).to(device).eval()
    return load_run(path, device)[0]


def create_ensemble(runs: list[str | Path], out: str | Path, weights: list[float] | None = None,
                    combine: str = "prob") -> dict:
    """Write ``out/ensemble.json`` for ``runs``; they must share labels, features and normalisation."""
    if len(runs) < 2:
        raise UsageError("an ensemble needs at least two run directories")
    runs = [Path(r).resolve() for r in runs]
    infos = [run_info(r) for r in runs]
    first = infos[0]
    for run, info in zip(runs[1:], infos[1:]):
        for key, what in (("labels", "labels"), ("feature", "feature"), ("feature_params", "feature parameters"),
                          ("sample_rate", "sample rate"), ("normalizer", "normalisation statistics")):
            if info[key] != first[key]:
                raise UsageError(f"ensemble members must share their {what}: {runs[0].name} has {first[key]!r:.80}, "
                                 f"{run.name} has {info[key]!r:.80} (train them on the same features and split)")
    EnsembleModel([nn.Identity()] * len(runs), weights, combine)  # validates weights and combine
    spec = {"runs": [str(r) for r in runs], "weights": weights or [1.0] * len(runs), "combine": combine,
            "labels": first["labels"]}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "ensemble.json", spec)
    return spec
