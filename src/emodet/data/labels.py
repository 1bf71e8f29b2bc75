"""One canonical label set for every corpus, synonyms onto it, and user label maps."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml

from ..core.errors import UsageError

CANONICAL_LABELS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised", "boredom")

# Lower-cased names and codes used by corpora and users, onto the canonical set.
SYNONYMS = {
    **{label: label for label in CANONICAL_LABELS},
    "neu": "neutral", "n": "neutral",
    "hap": "happy", "happiness": "happy", "joy": "happy", "h": "happy",
    "sadness": "sad", "sa": "sad",
    "ang": "angry", "anger": "angry", "a": "angry", "mad": "angry",
    "fea": "fearful", "fear": "fearful", "afraid": "fearful", "anxiety": "fearful", "f": "fearful",
    "dis": "disgust", "disgusted": "disgust", "d": "disgust",
    "sur": "surprised", "surprise": "surprised", "ps": "surprised", "pleasant_surprise": "surprised",
    "pleasant_surprised": "surprised", "su": "surprised",
    "bored": "boredom", "boring": "boredom",
}

DROP = "__drop__"


def load_label_map(path: str | Path | None) -> dict[str, str]:
    """Read ``--label-map FILE``: YAML/JSON ``{from: to}`` or CSV ``from,to``; ``to`` empty/null drops the label."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--label-map {path}: file not found")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".csv":
            rows = [r for r in csv.reader(text.splitlines()) if r and not r[0].startswith("#")]
            if rows and [c.strip().lower() for c in rows[0][:2]] == ["from", "to"]:
                rows = rows[1:]
            mapping = {r[0]: (r[1] if len(r) > 1 else "") for r in rows}
        elif path.suffix.lower() == ".json":
            mapping = json.loads(text)
        else:
            mapping = yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise UsageError(f"--label-map {path}: cannot parse ({exc})") from None
    if not isinstance(mapping, dict):
        raise UsageError(f"--label-map {path}: expected a mapping of source label to target label")
    return {str(k).strip().lower(): (DROP if v in (None, "", "drop") else str(v).strip().lower()) for k, v in mapping.items()}


def canonical_label(raw: str, label_map: dict[str, str] | None = None) -> str | None:
    """Map a corpus' label onto the canonical set (after ``label_map``); ``None`` if unknown, ``DROP`` if dropped."""
    key = str(raw).strip().lower()
    if label_map and key in label_map:
        return label_map[key]
    return SYNONYMS.get(key)


def parse_label_list(text: str | None) -> list[str] | None:
    """``--labels "neutral,happy,sad,angry"`` -> list, each checked against the canonical set."""
    if not text:
        return None
    labels = [t.strip().lower() for t in text.split(",") if t.strip()]
    return labels or None
