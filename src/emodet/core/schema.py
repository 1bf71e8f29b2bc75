"""Typed configuration sections: dataclasses that validate a mapping onto themselves, with errors a person can act on.

    @dataclass
    class Split(Section):
        method: str = option("auto", str, choices=("auto", "speaker"))
        val: float = option(0.1, int, float)

``Split().merged({"val": 0.2}, "data.split", "my.yaml")`` returns a checked copy; an unknown key
names the closest valid one, a wrong type names the key and the type it needs.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import field
from typing import Any

from .errors import UsageError
from .text import closest


def option(default: Any, *types: type, choices: tuple | None = None):
    """A config field: its default, the types it accepts (default: the default's type) and its choices."""
    meta = {"types": types or (type(default),), "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: type):
    """A nested section of the config."""
    return field(default_factory=cls, metadata={"section": cls})


class Section:
    """Base of the sections: ``merged`` validates a mapping of overrides onto a copy of the section."""

    def merged(self, override: Any, path: str, source: str):
        if not isinstance(override, dict):
            raise UsageError(f"{source}: {path or 'the config'} must be a mapping of keys, got {type(override).__name__}")
        fields = {f.name: f for f in dataclasses.fields(self)}
        values = {}
        for key, value in override.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in fields:
                close = closest(key, fields)
                hint = f"; did you mean {(path + '.' if path else '') + close!r}?" if close else ""
                raise UsageError(f"{source}: unknown key {where!r}{hint} (valid keys{' in ' + path if path else ''}: "
                                 f"{', '.join(fields)})")
            meta = fields[key].metadata
            if "section" in meta:
                values[key] = getattr(self, key).merged(value if value is not None else {}, where, source)
            else:
                values[key] = _checked(value, meta["types"], meta["choices"], where, source, getattr(self, key))
        return dataclasses.replace(self, **values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _checked(value: Any, types: tuple, choices: tuple | None, where: str, source: str, current: Any) -> Any:
    if isinstance(value, str) and float in types:  # YAML 1.1 reads 2e-3 as a string
        try:
            value = float(value)
        except ValueError:
            pass
    need = f"one of {', '.join(map(str, choices))}" if choices else _type_names(types)  # choices: name them
    if isinstance(value, bool) and bool not in types:
        raise UsageError(f"{source}: {where} must be {need}, got {value!r}")
    if not isinstance(value, types) and not (float in types and isinstance(value, int)):
        raise UsageError(f"{source}: {where} must be {need}, got {value!r} ({type(value).__name__})")
    if choices and value not in choices:
        raise UsageError(f"{source}: {where} must be {need}, got {value!r}")
    if isinstance(value, dict) and isinstance(current, dict):  # free-form mapping (model.params):
        value = _merge_free(current, value)  # --set model.params.hidden=[32] keeps the other params
    return copy.deepcopy(value)


def _merge_free(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge_free(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _type_names(types: tuple) -> str:
    if int in types and float in types:
        types = tuple(t for t in types if t is not int)
    names = {int: "integer", float: "number", str: "string", bool: "true/false", list: "list", dict: "mapping",
             type(None): "null"}
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in types))
