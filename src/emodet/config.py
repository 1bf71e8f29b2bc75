"""Experiment configuration: four validated sections (data, features, model, training).

YAML in (``yaml.safe_load``), defaults filled, every key checked: an unknown or misspelt
key gets an error naming it and the closest valid key; a value of the wrong type names the
key and the type it needs; a placeholder or missing data root says which key or flag sets it.
"""

from __future__ import annotations

import copy
import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import UsageError


@dataclass(frozen=True)
class Field:
    default: Any
    types: tuple
    choices: tuple | None = None


def F(default, *types, choices=None) -> Field:
    return Field(default, types or (type(default),), choices)


NUM = (int, float)
OPT_STR = (str, type(None))
SCHEMA = {
    "data": {
        "root": F(None, *OPT_STR),
        "corpus": F("auto", str, choices=("auto", "emodb", "ravdess", "crema-d", "tess", "savee", "folder", "csv")),
        "manifest": F(None, *OPT_STR),
        "sample_rate": F(16000, int),
        "labels": F(None, list, type(None)),
        "label_map": F(None, *OPT_STR),
        "speaker_pattern": F(None, *OPT_STR),
        "split": {
            "method": F("speaker", str, choices=("speaker", "manifest")),
            "val": F(0.1, *NUM),
            "test": F(0.2, *NUM),
            "seed": F(0, int),
        },
        "max_seconds": F(3.0, *NUM, type(None)),
        "normalize": F("none", str, choices=("none", "global", "speaker")),
        "eval_chunk_seconds": F(None, *NUM, type(None)),
        "num_workers": F(0, int),
    },
    "features": {
        "type": F("logmel", str),
        "params": F({}, dict),  # free-form: checked by the feature / model registry
        "cache_dir": F("cache", str),
        "plugins": F([], list),
    },
    "model": {
        "name": F("resnet", str),
        "preset": F("base", str),
        "params": F({}, dict),  # free-form: checked by the feature / model registry
    },
    "training": {
        "epochs": F(30, int),
        "batch_size": F(32, int),
        "lr": F(1e-3, *NUM),
        "weight_decay": F(1e-4, *NUM),
        "optimizer": F("adamw", str, choices=("adamw", "adam", "sgd", "lbfgs")),
        "scheduler": F("cosine", str, choices=("none", "cosine", "onecycle", "plateau")),
        "amp": F(False, bool),
        "early_stopping": {
            "metric": F("uar", str, choices=("uar", "wa", "macro_f1", "loss")),
            "patience": F(10, int),
            "min_delta": F(0.0, *NUM),
            "select": F("best", str, choices=("best", "last")),
        },
        "loss": {
            "type": F("ce", str, choices=("ce", "focal")),
            "class_weights": F("none", str, choices=("none", "balanced")),
            "gamma": F(2.0, *NUM),
            "label_smoothing": F(0.0, *NUM),
        },
        "augment": {
            "specaugment": F(False, bool),
            "freq_masks": F(2, int),
            "freq_width": F(8, int),
            "time_masks": F(2, int),
            "time_width": F(20, int),
            "mixup": F(0.0, *NUM),
            "speed": F([], list),  # speed-perturbation factors, e.g. [0.9, 1.1]: one extra training copy each
        },
        "distill": {
            "teacher": F(None, *OPT_STR),
            "weight": F(0.5, *NUM),
            "temperature": F(2.0, *NUM),
        },
        "grad_clip": F(5.0, *NUM),
        "seed": F(0, int),
        "device": F("auto", str),
    },
}

PLACEHOLDER_ROOTS = {"D:/DATA/EmotionDataset", "DATA_ROOT_PLACEHOLDER"}


def _defaults(schema: dict) -> dict:
    return {k: _defaults(v) if isinstance(v, dict) else copy.deepcopy(v.default) for k, v in schema.items()}


def default_config() -> dict:
    """A full config with every default."""
    return _defaults(SCHEMA)


def _type_names(types: tuple) -> str:
    if int in types and float in types:
        types = tuple(t for t in types if t is not int)
    names = {int: "integer", float: "number", str: "string", bool: "true/false", list: "list", dict: "mapping",
             type(None): "null"}
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in types))


def _merge(base: dict, override: dict, schema: dict, path: str, source: str) -> dict:
    if not isinstance(override, dict):
        raise UsageError(f"{source}: {path or 'the config'} must be a mapping of keys, got {type(override).__name__}")
    out = copy.deepcopy(base)
    for key, value in override.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in schema:
            close = difflib.get_close_matches(str(key), list(schema), n=1)
            hint = f"; did you mean {(path + '.' if path else '') + close[0]!r}?" if close else ""
            raise UsageError(f"{source}: unknown key {where!r}{hint} (valid keys{' in ' + path if path else ''}: "
                             f"{', '.join(schema)})")
        spec = schema[key]
        if isinstance(spec, dict):
            out[key] = _merge(base[key], value if value is not None else {}, spec, where, source)
            continue
        if isinstance(value, str) and float in spec.types:  # YAML 1.1 reads 2e-3 as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) and bool not in spec.types:
            raise UsageError(f"{source}: {where} must be {_type_names(spec.types)}, got {value!r}")
        if not isinstance(value, spec.types):
            if float in spec.types and isinstance(value, int):
                pass
            else:
                raise UsageError(f"{source}: {where} must be {_type_names(spec.types)}, got {value!r} "
                                 f"({type(value).__name__})")
        if spec.choices and value not in spec.choices:
            raise UsageError(f"{source}: {where} must be one of {', '.join(spec.choices)}, got {value!r}")
        if isinstance(value, dict) and isinstance(out.get(key), dict):  # free-form mapping (model.params):
            value = _merge_free(out[key], value)  # --set model.params.hidden=[32] keeps the other params
        out[key] = copy.deepcopy(value)
    return out


def _merge_free(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge_free(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def with_defaults(partial: dict, source: str) -> dict:
    """A full config from a mapping that may lack keys (a YAML file, or a config saved by an older emodet):
    each missing key takes its default, each present one is checked as in a file (``source`` names it)."""
    return _merge(default_config(), partial, SCHEMA, "", source)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, data_root: str | None = None) -> dict:
    """Defaults, then the YAML file, then ``--set key.sub=value`` overrides, then ``--data-root``."""
    cfg = default_config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"--config {path}: file not found")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise UsageError(f"--config {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        cfg = with_defaults(loaded, str(path))
    for item in overrides or ():
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r}: expected key.sub=value, e.g. --set training.epochs=3")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        nested: Any = value
        for part in reversed(key.strip().split(".")):
            nested = {part: nested}
        cfg = _merge(cfg, nested, SCHEMA, "", f"--set {key.strip()}")
    if data_root is not None:
        cfg["data"]["root"] = data_root
    check_values(cfg)
    return cfg


def check_values(cfg: dict) -> None:
    """Checks beyond types: ranges and cross-key rules."""
    t = cfg["training"]
    for key in ("epochs", "batch_size"):
        if t[key] < 1:
            raise UsageError(f"training.{key} must be at least 1, got {t[key]}")
    if t["lr"] <= 0:
        raise UsageError(f"training.lr must be positive, got {t['lr']}")
    if not 0 <= t["loss"]["label_smoothing"] < 1:
        raise UsageError(f"training.loss.label_smoothing must be in [0, 1), got {t['loss']['label_smoothing']}")
    if not 0 <= t["distill"]["weight"] <= 1:
        raise UsageError(f"training.distill.weight must be in [0, 1], got {t['distill']['weight']}")
    if t["distill"]["temperature"] <= 0:
        raise UsageError(f"training.distill.temperature must be positive, got {t['distill']['temperature']}")
    check_speed_factors(t["augment"]["speed"], "training.augment.speed")
    d = cfg["data"]
    if d["max_seconds"] is not None and d["max_seconds"] <= 0:
        raise UsageError(f"data.max_seconds must be positive or null, got {d['max_seconds']}")
    if d["labels"] is not None and (len(d["labels"]) < 2 or not all(isinstance(x, str) for x in d["labels"])):
        raise UsageError(f"data.labels must be a list of at least two label names, got {d['labels']!r}")


def check_speed_factors(speeds: list, source: str) -> None:
    """Speed-perturbation factors: numbers in [0.5, 2], none equal to 1 or listed twice."""
    from .audio import is_speed_factor  # the range speed_perturb takes, defined once beside it

    for f in speeds:
        if not is_speed_factor(f) or f == 1:
            raise UsageError(f"{source}: each factor must be a number in [0.5, 2] other than 1 "
                             f"(the recording itself is always kept), e.g. [0.9, 1.1]; got {f!r}")
    if len(set(speeds)) != len(speeds):
        raise UsageError(f"{source}: factor listed twice in {speeds}")


def check_data_root(cfg: dict) -> Path | None:
    """The data root as a Path; a placeholder or missing folder is an error saying how to set it."""
    root = cfg["data"]["root"]
    if root is None:
        if cfg["data"]["manifest"] is None:
            raise UsageError("no data: set data.root in the config or pass --data-root DIR "
                             "(or give data.manifest, a manifest CSV from `emodet data prepare`)")
        return None
    if root in PLACEHOLDER_ROOTS or "PLACEHOLDER" in root.upper() or (re.match(r"^[A-Za-z]:[\\/]", root) and not Path(root).exists()):
        raise UsageError(f"data.root is a placeholder ({root!r}): pass --data-root DIR or set data.root in the config "
                         "to the folder holding your corpus")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise UsageError(f"data.root {root!r}: no such folder (pass --data-root DIR or fix data.root in the config)")
    return path


def dump_config(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None)
