"""Run directories as typed objects: what a finished run (or an ensemble of runs) is and how to load it.

    info = load_run("runs/cnn_v1")            # RunInfo: labels, features, normalisation, data, config, metrics
    model = load_predictor("runs/cnn_v1")     # the model with its selected weights, in eval mode

A run directory (``emodet train``) holds ``config.yaml``, ``manifest.csv``, ``metrics.json`` and
``checkpoints/``; an ensemble directory (``emodet ensemble``) holds ``ensemble.json`` naming its
runs. Both work wherever a model is wanted: evaluation, export, distillation teacher.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .config import Config, check_data_root, load_config
from .core.errors import UsageError
from .core.fusion import normalized_weights
from .core.io import atomic_write_json


@dataclass(frozen=True)
class RunInfo:
    """A finished run, or an ensemble of runs sharing labels, features and normalisation."""

    path: Path
    labels: list
    feature: str
    feature_params: dict
    sample_rate: int
    normalizer: dict
    input_shape: tuple
    config: Config  # the (first member's) resolved config
    metrics: dict  # the (first member's) metrics.json
    members: tuple = ()  # an ensemble's run directories; () for a run
    weights: tuple = ()
    combine: str = "prob"
    extra: dict = field(default_factory=dict)

    @property
    def is_ensemble(self) -> bool:
        return bool(self.members)

    @property
    def runs(self) -> tuple:
        """The run directories whose checkpoints make this model."""
        return self.members or (self.path,)

    @property
    def manifest(self) -> Path:
        return Path(self.runs[0]) / "manifest.csv"

    @property
    def data_root(self) -> str | None:
        """The root the run's manifest paths are under; ``None`` where they are relative to the manifest (a run
        trained from a manifest whose config kept a shipped placeholder root, as training read it)."""
        try:
            return None if check_data_root(self.config) is None else self.config.data.root
        except UsageError:  # a root that is gone: kept, so a missing file is named under it
            return self.config.data.root

    @property
    def cache_dir(self) -> str:
        return self.config.features.cache_dir

    @property
    def plugins(self) -> list:
        return self.config.features.plugins

    @property
    def normalize(self) -> str:
        return self.normalizer.get("mode", "none")


def is_finished_run(path: str | Path) -> bool:
    path = Path(path)
    return (path / "config.yaml").is_file() and (path / "metrics.json").is_file()


def load_run(path: str | Path) -> RunInfo:
    """The ``RunInfo`` of a finished run or ensemble directory; anything else is a ``UsageError`` saying what it is."""
    path = Path(path)
    if (path / "ensemble.json").is_file():
        spec = json.loads((path / "ensemble.json").read_text())
        first = _run_info(Path(spec["runs"][0]))
        return RunInfo(**{**first.__dict__, "path": path, "members": tuple(Path(r) for r in spec["runs"]),
                          "weights": tuple(spec.get("weights") or [1.0] * len(spec["runs"])),
                          "combine": spec.get("combine", "prob")})
    return _run_info(path)


def _run_info(run_dir: Path) -> RunInfo:
    if not is_finished_run(run_dir):
        what = "a cross-validation directory: give one of its fold_NN folders" if (run_dir / "cv_config.json").is_file() \
            else "not a finished run directory (it needs config.yaml and metrics.json; train one with `emodet train`)"
        raise UsageError(f"{run_dir} is {what}")
    cfg = load_config(run_dir / "config.yaml")
    m = json.loads((run_dir / "metrics.json").read_text())
    labels = m.get("labels") or m.get("val", {}).get("labels")
    return RunInfo(run_dir, labels, m["features"]["type"], m["features"]["params"], int(m["features"]["sample_rate"]),
                   m["normalizer"], tuple(m["model"]["input_shape"]), cfg, m)


def training_speakers(path: str | Path) -> set[str]:
    """Speakers a run (or any member of an ensemble) saw in training or validation."""
    from .data.manifest import read_manifest

    seen: set[str] = set()
    for run in load_run(path).runs:
        manifest = Path(run) / "manifest.csv"
        if manifest.is_file():
            seen |= {r["speaker"] for r in read_manifest(manifest) if r.get("split") in ("train", "val")}
    return seen


def load_checkpointed_model(run_dir: str | Path, device="cpu"):
    """The model of one run with its selected weights (``checkpoints/best.pt``), in eval mode."""
    from .models import build_model
    from .training.checkpoint import load_checkpoint

    info = _run_info(Path(run_dir))
    m = info.config.model
    model = build_model(m.name, len(info.labels), info.input_shape, m.preset, **m.params)
    try:
        model.load_state_dict(load_checkpoint(Path(run_dir) / "checkpoints" / "best.pt", map_location=device)["model"])
    except RuntimeError as exc:
        raise UsageError(f"{run_dir}: the checkpoint does not fit model {m.name!r} of this emodet "
                         f"version (trained by another version?): {str(exc).splitlines()[0]}") from None
    return model.to(device).eval()


def load_predictor(path: str | Path, device="cpu"):
    """The model of a run or ensemble directory, in eval mode: ``(x, lengths) -> logits``."""
    from .models.ensemble import EnsembleModel

    info = load_run(path)
    if not info.is_ensemble:
        return load_checkpointed_model(path, device)
    members = [load_checkpointed_model(run, device) for run in info.members]
    return EnsembleModel(members, list(info.weights), info.combine).to(device).eval()


_SHARED = (("labels", "labels"), ("feature", "feature"), ("feature_params", "feature parameters"),
           ("sample_rate", "sample rate"), ("normalizer", "normalisation statistics"))


def _shared_value(info: "RunInfo", key: str):
    value = getattr(info, key)
    if key == "feature_params":  # a run from before a parameter existed equals one with its default
        from .features import canonical_params

        return canonical_params(info.feature, value)
    return value


def create_ensemble(runs: list[str | Path], out: str | Path, weights: list[float] | None = None,
                    combine: str = "prob") -> dict:
    """Write ``out/ensemble.json`` for ``runs``; they must share labels, features and normalisation."""
    if len(runs) < 2:
        raise UsageError("an ensemble needs at least two run directories")
    if combine not in ("prob", "logit"):
        raise UsageError(f"ensemble combine {combine!r}: valid values are prob, logit")
    runs = [Path(r).resolve() for r in runs]
    infos = [_run_info(r) for r in runs]  # each a finished run (named if not) before anything else
    twice = sorted({str(r) for r in runs if runs.count(r) > 1})
    if twice:
        raise UsageError(f"ensemble: {', '.join(twice)} given more than once (a model with itself gives its own answers; "
                         "to count one member more, give each run once and --weights)")
    first = infos[0]
    for run, info in zip(runs[1:], infos[1:]):
        for key, what in _SHARED:
            a, b = _shared_value(first, key), _shared_value(info, key)
            if a != b:
                if isinstance(a, dict) and isinstance(b, dict):  # name what differs, not the first 80 characters
                    keys = sorted(k for k in {*a, *b} if a.get(k) != b.get(k))
                    a, b = {k: a.get(k) for k in keys}, {k: b.get(k) for k in keys}
                raise UsageError(f"ensemble members must share their {what}: {runs[0].name} has "
                                 f"{a!r:.200}, {run.name} has {b!r:.200} (train them on the same features and split)")
    normalized_weights(weights, len(runs), "ensemble")  # refuses bad weights before anything is written
    spec = {"runs": [str(r) for r in runs], "weights": weights or [1.0] * len(runs), "combine": combine,
            "labels": first.labels}
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(out) / "ensemble.json", spec)
    return spec
