"""Model registry (timm's pattern): a dict of name -> builder plus a decorator.

``build_model(name, n_classes, input_shape, preset="base", **params)``: ``input_shape`` is
``(n_features, n_frames)`` of one item (``n_frames`` may be ``None``); every model maps
``x (B, F, T)`` and optional ``lengths (B,)`` to logits ``(B, n_classes)``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..core.errors import UnknownNameError, UsageError
from ..core.text import did_you_mean


@dataclass(frozen=True)
class ModelEntry:
    name: str
    cls: Callable[..., nn.Module]
    presets: dict
    description: str
    check: Callable | None = None  # (features.type, features.params, model.params): refuses features it cannot take
    normalize: tuple | None = None  # the data.normalize modes it can take (None: any)


_MODEL_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, *, presets: dict | None = None, override: bool = False, description: str | None = None,
                   check: Callable | None = None, normalize: tuple | None = None):
    """Class decorator registering a model family; ``presets`` maps preset names to parameters; ``check``
    (optional) is called with ``(features.type, features.params, model params)`` before a run reads any file;
    ``normalize`` (optional): the ``data.normalize`` modes the model can take (a pretrained layer wants its input
    as it was pretrained on)."""

    def decorator(cls):
        if name in _MODEL_REGISTRY and not override:
            raise UsageError(f"model name {name!r} is already registered; pass override=True to replace it")
        doc = description if description is not None else (cls.__doc__ or "").strip().split("\n")[0]
        _MODEL_REGISTRY[name] = ModelEntry(name, cls, dict(presets or {"base": {}}), doc, check,
                                           tuple(normalize) if normalize else None)
        return cls

    return decorator


def list_models() -> list[str]:
    return sorted(_MODEL_REGISTRY)


def get_model_entry(name: str) -> ModelEntry:
    try:
        return _MODEL_REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownNameError(f"unknown model {name!r}{did_you_mean(name, list_models())}; known models: "
                               f"{', '.join(list_models())}") from None


def check_model_features(name: str, preset: str, params: dict, features_type: str, features_params: dict,
                         normalize: str | None = None) -> None:
    """A model's own refusal of features (or a ``data.normalize`` mode) it cannot take (most models take any),
    before a run reads files."""
    entry = get_model_entry(name)
    if normalize is not None and entry.normalize and str(normalize) not in entry.normalize:
        raise UsageError(f"model {name!r} takes its features as its pretrained layers were trained on them: set "
                         f"data.normalize: {' or '.join(entry.normalize)} (got {normalize!r})")
    if entry.check is not None:
        entry.check(features_type, features_params, {**entry.presets.get(preset, {}), **params})


def build_model(name: str, n_classes: int, input_shape: tuple, preset: str = "base", **params) -> nn.Module:
    """Build model ``name`` for ``n_classes`` classes and items of ``input_shape = (F, T)``."""
    entry = get_model_entry(name)
    if preset not in entry.presets:
        raise UsageError(f"model {name!r} has no preset {preset!r}; presets: {', '.join(entry.presets)}")
    if not isinstance(n_classes, int) or n_classes < 2:
        raise UsageError(f"a classifier needs at least 2 classes, got {n_classes!r}")
    signature = inspect.signature(entry.cls.__init__)
    valid = [p for p in signature.parameters if p not in ("self", "n_classes", "n_features")]
    unknown = [k for k in params if k not in valid]
    if unknown:
        raise UsageError(f"model {name!r} has no parameter {unknown[0]!r}{did_you_mean(unknown[0], valid)}; "
                         f"valid parameters: {', '.join(valid)}")
    kwargs = {**entry.presets[preset], **params}
    try:
        return entry.cls(n_classes=n_classes, n_features=int(input_shape[0]), **kwargs)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"model {name!r}: {exc}") from None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
