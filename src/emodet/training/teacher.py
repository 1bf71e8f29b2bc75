"""Distillation teachers: a frozen run, ensemble or cross-validation fold whose outputs a student learns.

Two kinds, chosen by ``load_teacher``:

- ``BatchTeacher``: the teacher shares the student's features and normalisation, so it runs on the
  student's batches (augmentation included): ``teacher(x, lengths) -> logits``; with
  ``copy_targets: clean`` and augmented copies it is a ``RecordingTeacher`` instead (whole recordings,
  no SpecAugment), as the copies' targets must come from other audio than the batch holds.
- ``RecordingTeacher``: it uses other features (an MLP on openSMILE functionals, or a pretrained
  encoder, teaching a log-mel CNN): its logits are computed once a training recording from its own
  inputs and ride along in the batch (``batch[3]``); an augmented training copy (speed, noise, room,
  codec) is given to the teacher augmented the same way (``training.distill.copy_targets: own``) or
  takes the teacher's outputs on the clean recording it came from (``clean``: for a teacher that is
  not robust itself, whose answers on noisy audio are worse than its answers on the clean original).

A teacher that trained or validated on one of the student's test speakers is refused: its outputs
would leak them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ..core.errors import UsageError

log = logging.getLogger(__name__)


class BatchTeacher:
    """A teacher model run on the student's own batches."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.model(x, lengths)


class RecordingTeacher:
    """A teacher's logits ``(N, C)``, one row a training recording, in the student's label order."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits


def resolve_teacher(spec: str | Path, test_speakers: set[str]) -> Path:
    """A run or ensemble directory as given; for a cross-validation directory, its fold that held out
    exactly ``test_speakers`` (so distilling fold by fold never shows a student its test speakers)."""
    path = Path(spec)
    folds = sorted(path.glob("fold_*/metrics.json"))
    if not folds:
        return path
    for metrics in folds:
        held_out = set(json.loads(metrics.read_text()).get("test", {}).get("speakers", []))
        if held_out == set(test_speakers):
            return metrics.parent
    raise UsageError(f"training.distill.teacher {spec}: no finished fold of this cross-validation held out "
                     f"{', '.join(sorted(test_speakers)) or 'no speakers'}; run the teacher's cv with the same folds "
                     "(and split seed) first")


def load_teacher(cfg, data, train_rows: list[dict], test_speakers: set[str], normalizer: dict, device="cpu"):
    """The teacher ``cfg.training.distill.teacher`` names for a student on ``data`` (``PreparedData``) with
    ``normalizer`` (the student's, as saved), or ``None`` when there is none."""
    spec = cfg.training.distill.teacher
    if not spec:
        from ..config import DistillConfig

        distill, default = cfg.training.distill, DistillConfig()
        if (distill.weight, distill.copy_targets) != (default.weight, default.copy_targets):
            log.warning("  training.distill has settings (weight %g, copy_targets %s) but no teacher: this run trains "
                        "without distillation (give one: --teacher RUN_DIR)", distill.weight, distill.copy_targets)
        return None
    from ..data.cache import FeatureCache
    from ..evaluation.predict import predict_rows
    from ..features import canonical_params, load_plugins
    from ..runs import load_predictor, load_run, training_speakers

    path = resolve_teacher(spec, set(test_speakers)) if test_speakers else Path(spec)
    leaked = training_speakers(path) & set(test_speakers)
    if leaked:
        raise UsageError(f"training.distill.teacher {path} was trained on test speaker(s) {', '.join(sorted(leaked))}; "
                         "its outputs would leak them into the student (use a teacher trained without them, "
                         "e.g. the matching fold of a cross-validation)")
    info = load_run(path)
    model = load_predictor(path, device)
    clean_copies = cfg.training.distill.copy_targets == "clean" and any(r.get("variant") for r in train_rows)
    if cfg.training.distill.copy_targets == "clean" and not clean_copies:
        log.info("  training.distill.copy_targets: clean changes nothing: this run has no augmented copies")
    same_features = (info.feature, canonical_params(info.feature, info.feature_params), info.sample_rate) == \
        (data.cache.feature, canonical_params(data.cache.feature, data.cache.params), data.cache.sr)
    if same_features and info.normalizer == normalizer and not clean_copies:
        return BatchTeacher(model)
    if sorted(info.labels) != sorted(data.labels):
        raise UsageError(f"training.distill.teacher {path}: its labels ({', '.join(info.labels)}) differ from the "
                         f"student's ({', '.join(data.labels)})")
    if cfg.training.augment.mixup:
        if clean_copies:
            raise UsageError("training.augment.mixup cannot be combined with training.distill.copy_targets: clean (the "
                             "teacher's outputs are then per recording); set mixup to 0 or copy_targets: own")
        raise UsageError("training.augment.mixup cannot be combined with a teacher on other features or normalisation "
                         "(its outputs are per recording); set mixup to 0 or use a teacher with the student's features "
                         "and normalisation")
    load_plugins(info.plugins)

    def teacher_cache(student_cache=None) -> FeatureCache:  # the teacher's features of the same (augmented) audio
        return FeatureCache(data.cache.root_dir, info.feature, info.feature_params, sr=info.sample_rate,
                            speed=getattr(student_cache, "speed", None), augment=getattr(student_cache, "augment", None))

    variants = {name: teacher_cache(c) for name, c in data.variant_caches.items()}
    index = list(range(len(train_rows)))
    if clean_copies:  # each copy takes the teacher's outputs on its original (the same path, no variant), once
        originals = {r["path"]: i for i, r in enumerate(train_rows) if not r.get("variant")}
        index = [originals.get(r["path"], i) for i, r in enumerate(train_rows)]
    unique, inverse = torch.unique(torch.tensor(index), return_inverse=True)
    logits = predict_rows(model, [train_rows[i] for i in unique.tolist()], data.root, data.manifest_path, info.labels,
                          teacher_cache(), info.normalizer, variant_caches=variants)[inverse]
    order = [info.labels.index(label) for label in data.labels]
    return RecordingTeacher(logits[:, order].contiguous())
