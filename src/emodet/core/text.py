"""Small text helpers every user-facing message shares: "did you mean" and ``key=value`` parsing."""

from __future__ import annotations

import difflib
from typing import Any, Iterable

import yaml

from .errors import UsageError


def closest(name: Any, choices: Iterable[Any]) -> str | None:
    """The choice closest to ``name`` (difflib's ratio >= 0.6), or ``None``."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)
    return close[0] if close else None


def did_you_mean(name: Any, choices: Iterable[Any], prefix: str = "") -> str:
    """``" (did you mean 'x'?)"`` for the choice closest to ``name``, else ``""``; ``prefix`` is put before it."""
    close = closest(name, choices)
    return f" (did you mean {prefix + close!r}?)" if close else ""


def parse_value(text: str) -> Any:
    """A command-line value read as a YAML scalar or flow collection (``3`` -> 3, ``[0.9, 1.1]`` -> list);
    text YAML cannot read stays a string; an empty value is ``None``."""
    if not text.strip():
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_assignments(items: Iterable[str] | None, flag: str, example: str, form: str = "key=value") -> list[tuple[str, Any]]:
    """``["n_mels=64", "fmax=8000"]`` -> ``[("n_mels", 64), ("fmax", 8000)]``; a malformed item is a
    ``UsageError`` naming ``flag`` and showing ``example`` (e.g. ``"n_mels=64"``)."""
    out = []
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} {item!r}: expected {form}, e.g. {flag} {example}")
        out.append((key.strip(), parse_value(value)))
    return out
