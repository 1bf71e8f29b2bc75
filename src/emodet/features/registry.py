"""The feature registry: a dict of name -> FeatureSpec plus a decorator (timm's pattern).

A feature is any function ``fn(wav: np.ndarray, sr: int, params: dict) -> np.ndarray``
returning ``(features, frames)`` float32 (a 1-D vector of functionals is taken as one frame).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..core.errors import UnknownNameError, UsageError
from ..core.text import did_you_mean

FeatureFn = Callable[[np.ndarray, int, dict], np.ndarray]


@dataclass(frozen=True)
class FeatureSpec:
    """What the registry knows of a feature.

    ``defaults`` is ``None`` for features that take any parameters (most plugins); otherwise
    only its keys are accepted. ``module_factory(sr, params) -> nn.Module`` is set for
    features that can run batched in torch and go inside an exported ONNX graph.

    For features that are costly to compute (pretrained encoders): ``view(features, params)`` picks
    what a run uses from what ``fn`` computed (e.g. some layers of all of them) and ``view_keys`` are
    the parameters it reads, which the cache key leaves out, so a sweep over them computes nothing
    again; ``identity(params) -> dict`` adds what the name does not say to the cache key (a model's
    content hash); ``batch_fn(wavs, sr, params) -> [features]`` computes several recordings at once;
    ``graph_only``: the torch-free runtime cannot compute it, so exported models carry it in the graph.
    ``keyed_if_set``: parameters added after caches of the feature existed, in the cache key only when not
    ``None`` (their default), so those caches stay valid. ``check_rate(params, sr)``: the checks that need the
    sample rate (e.g. ``fmax <= sr/2``), run when a cache or dataset is set up, before any file is read.
    """

    name: str
    fn: FeatureFn
    defaults: dict | None = None
    module_factory: Callable[[int, dict], Any] | None = None
    description: str = ""
    aliases: tuple[str, ...] = field(default_factory=tuple)
    native_rate: bool = False  # computed at each file's own sample rate, never resampled
    check_params: Callable[[dict], None] | None = None  # raises UsageError naming a bad parameter
    view: Callable[[np.ndarray, dict], np.ndarray] | None = None
    view_keys: tuple[str, ...] = ()
    identity: Callable[[dict], dict] | None = None
    batch_fn: Callable[[list, int, dict], list] | None = None
    graph_only: bool = False
    keyed_if_set: tuple[str, ...] = ()
    check_rate: Callable[[dict, int], None] | None = None  # check_params' part that needs the sample rate

    @property
    def exportable(self) -> bool:
        return self.module_factory is not None

    def check_at_rate(self, params: dict, sr: int) -> None:
        """``check_rate`` for features computed at ``sr`` (native-rate ones are computed at each file's own)."""
        if self.check_rate is not None and not self.native_rate:
            self.check_rate(params, int(sr))


_FEATURE_REGISTRY: dict[str, FeatureSpec] = {}
_ALIASES: dict[str, str] = {}


def register_feature(
    name: str,
    *,
    override: bool = False,
    defaults: dict | None = None,
    module_factory: Callable[[int, dict], Any] | None = None,
    aliases: tuple[str, ...] | list[str] = (),
    description: str | None = None,
    native_rate: bool = False,
    check_params: Callable[[dict], None] | None = None,
    **extras,
) -> Callable[[FeatureFn], FeatureFn]:
    """Decorator registering ``fn(wav, sr, params) -> (features, frames)`` under ``name``.

    ``native_rate=True``: files are read at their own sample rate (``sr`` tells ``fn`` which),
    for features defined at any rate that would lose the band above 8 kHz to resampling.
    ``check_params(resolved_params)`` runs when parameters are resolved (before any file is
    read) and raises ``UsageError`` naming the bad parameter.
    Registering a name (or alias) that is taken raises ``UsageError`` unless ``override=True``.
    ``extras``: ``view``, ``view_keys``, ``identity``, ``batch_fn``, ``graph_only``, ``keyed_if_set``, ``check_rate`` (see
    ``FeatureSpec``).
    """
    if not isinstance(name, str) or not name.strip():
        raise UsageError(f"feature name must be a non-empty string, got {name!r}")

    def decorator(fn: FeatureFn) -> FeatureFn:
        if not callable(fn):
            raise UsageError(f"register_feature({name!r}) must decorate a function, got {fn!r}")
        for key in (name, *aliases):
            if not override and (key in _FEATURE_REGISTRY or key in _ALIASES):
                owner = _ALIASES.get(key, key)
                raise UsageError(
                    f"feature name {key!r} is already registered (by {_FEATURE_REGISTRY[owner].fn.__module__}); "
                    "pass override=True to replace it"
                )
        if override:
            for key in (name, *aliases):
                _ALIASES.pop(key, None)
        doc = description if description is not None else (fn.__doc__ or "").strip().split("\n")[0]
        _FEATURE_REGISTRY[name] = FeatureSpec(name, fn, defaults, module_factory, doc, tuple(aliases), native_rate,
                                              check_params, **extras)
        for alias in aliases:
            _ALIASES[alias] = name
        return fn

    return decorator


def list_features(with_aliases: bool = False) -> list[str]:
    """Sorted names of the registered features (and their aliases when asked)."""
    names = set(_FEATURE_REGISTRY)
    if with_aliases:
        names |= set(_ALIASES)
    return sorted(names)


def get_feature_spec(name: str) -> FeatureSpec:
    """The spec registered under ``name`` or an alias; unknown names list the known ones."""
    key = _ALIASES.get(name, name)
    try:
        return _FEATURE_REGISTRY[key]
    except (KeyError, TypeError):
        raise UnknownNameError(_unknown_message("feature", name, list_features(with_aliases=True))) from None


def get_feature(name: str) -> FeatureFn:
    """The function registered under ``name``: ``fn(wav, sr, params) -> (features, frames)``."""
    return get_feature_spec(name).fn


def resolve_params(name: str, params: dict | None) -> dict:
    """Defaults of feature ``name`` updated with ``params``; unknown keys are refused."""
    spec = get_feature_spec(name)
    params = dict(params or {})
    if spec.defaults is None:
        return params
    unknown = sorted(set(params) - set(spec.defaults))
    if unknown:
        key = unknown[0]
        raise UsageError(
            f"feature {spec.name!r} has no parameter {key!r}{did_you_mean(key, spec.defaults)}; "
            f"valid parameters: {', '.join(sorted(spec.defaults))}"
        )
    resolved = {**spec.defaults, **params}
    if spec.check_params is not None:
        spec.check_params(resolved)
    return resolved


def canonical_params(name: str, params: dict) -> dict:
    """``params`` as runs are compared and caches keyed: a parameter newer than the caches (``keyed_if_set``)
    that holds its default ``None`` is left out, so a run from before it existed equals one from after."""
    spec = _FEATURE_REGISTRY.get(_ALIASES.get(name, name))
    if spec is None:  # a plugin not loaded here: its parameters as they are
        return dict(params)
    return {k: v for k, v in params.items() if not (k in spec.keyed_if_set and v is None)}


def compute_feature(name: str, wav: np.ndarray, sr: int, params: dict | None = None, view: bool = True) -> np.ndarray:
    """Run feature ``name`` on one mono signal and check its output: ``(samples,) -> (features, frames)`` float32
    (``view=False``: all the feature computes, before its ``view`` picks what the parameters ask for)."""
    spec = get_feature_spec(name)
    full = resolve_params(name, params)
    out = check_feature_output(spec.name, spec.fn(wav, sr, full))
    return apply_view(spec, out, full) if view else out


def apply_view(spec: FeatureSpec, features: np.ndarray, params: dict) -> np.ndarray:
    """What a run uses of a feature's full output (the identity for features without a ``view``)."""
    return np.ascontiguousarray(spec.view(features, params), dtype=np.float32) if spec.view is not None else features


def compute_feature_from_file(name: str, path, sr: int, params: dict | None = None,
                              speed: float | None = None, view: bool = True, transform=None) -> tuple[np.ndarray, float]:
    """Read ``path`` (at ``sr``, or at its own rate for a ``native_rate`` feature) and compute feature
    ``name``; returns ``(features, seconds of audio)``. ``speed``: of the recording played that many times
    as fast (``emodet.core.audio.speed_perturb``, an augmentation); ``transform(wav, rate, path)``: another
    augmentation of the waveform (``emodet.data.augment.AugmentCopy``). Audio problems raise ``AudioError``."""
    from ..core.audio import load_audio_with_rate, speed_perturb

    wav, rate = load_audio_with_rate(path, None if get_feature_spec(name).native_rate else sr)
    seconds = len(wav) / rate
    if speed is not None:
        wav = speed_perturb(wav, rate, speed)
    if transform is not None:
        wav = transform(wav, rate, str(Path(path).resolve()))
    return compute_feature(name, wav, rate, params, view), seconds


def check_feature_output(name: str, out: Any) -> np.ndarray:
    """Validate what a feature function returned; a 1-D vector becomes ``(n, 1)``."""
    if hasattr(out, "detach"):  # a torch tensor from a user's plugin
        out = out.detach().cpu().numpy()
    if not isinstance(out, np.ndarray):
        raise UsageError(f"feature {name!r} returned {type(out).__name__}; it must return a numpy array (features, frames)")
    if out.ndim == 1:
        out = out[:, None]
    if out.ndim != 2 or out.shape[0] == 0 or out.shape[1] == 0:
        raise UsageError(f"feature {name!r} returned shape {out.shape}; it must be 2-D (features, frames), non-empty")
    out = np.ascontiguousarray(out, dtype=np.float32)
    if not np.isfinite(out).all():
        raise UsageError(f"feature {name!r} returned NaN or infinite values")
    return out


def _unknown_message(kind: str, name: Any, known: list[str]) -> str:
    return f"unknown {kind} {name!r}{did_you_mean(name, known)}; known {kind}s: {', '.join(known) or '(none)'}"
