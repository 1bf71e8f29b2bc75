"""What predictions look like (torch-free): probabilities as ``{label: p}``, windows, the abstaining top label,
the ``predict`` / ``predict_batch`` API every predictor (one model or a fusion) shares, and the warnings that
come with answers a model gives but cannot stand behind."""

from __future__ import annotations

import os
import warnings

import numpy as np

# shorter, or digital silence: too little to judge (an EmoDB student read every 0.05-0.5 s clip as "fearful" at 0.99)
MIN_SOUND_SECONDS = 0.5


class CalibrationWarning(UserWarning):
    """A per-speaker model normalised with the statistics of the recording it predicts."""


def warn_if_few(count: int, doing: str, of_what: str) -> None:
    """A ``CalibrationWarning`` for statistics from fewer than 3 recordings: one or two recordings' statistics
    carry what is said in them (their emotion), not the speaker's or the domain's."""
    if count < 3:
        warnings.warn(f"{doing} on {count} recording(s) {of_what}: statistics of so few recordings follow what is "
                      "said in them; give a few (3 or more, of different emotions where you can)", CalibrationWarning,
                      stacklevel=4)


class LittleSoundWarning(UserWarning):
    """A recording too short or silent for an emotion to be judged: a model still answers, and means nothing by it."""


def warn_little_sound(loaded: list[tuple], items) -> None:
    """A ``LittleSoundWarning`` for each loaded ``(samples, rate)`` that is digital silence or shorter than
    ``MIN_SOUND_SECONDS`` (named by its path where ``items`` holds one)."""
    for k, ((wav, rate), item) in enumerate(zip(loaded, items)):
        name = os.fspath(item) if isinstance(item, (str, os.PathLike)) else f"recording {k + 1}"
        note = little_sound(wav, rate, name)
        if note:
            warnings.warn(note, LittleSoundWarning, stacklevel=4)


def little_sound(wav: np.ndarray, rate: int, name: str) -> str | None:
    """What to say of a recording that is digital silence or shorter than ``MIN_SOUND_SECONDS`` (else ``None``)."""
    why = ("digital silence" if not np.any(wav) else
           f"{len(wav) / rate:.2f} s long" if len(wav) < MIN_SOUND_SECONDS * rate else None)
    return why and (f"{name}: {why}: too little sound to judge an emotion (under {MIN_SOUND_SECONDS:g} s of audio, "
                    "or silence); the answer is a guess")


class ProbabilityAPI:
    """``predict`` / ``predict_batch`` for any predictor with ``labels`` and ``probabilities(items, sr)``."""

    labels: list[str]

    def probabilities(self, items, sr: int | None = None) -> np.ndarray:
        raise NotImplementedError

    def predict(self, item, sr: int | None = None) -> dict:
        """``{label: probability}`` for a file path, ``(samples, rate)`` or a samples array with ``sr``."""
        return as_dict(self.labels, self.probabilities([item], sr)[0])

    def predict_batch(self, items, sr: int | None = None) -> list[dict]:
        return [as_dict(self.labels, p) for p in self.probabilities(items, sr)]


UNCERTAIN = "uncertain"


def top_label(probabilities: dict, min_confidence: float = 0.0) -> str:
    """The most probable label, or ``"uncertain"`` when its probability is below ``min_confidence`` (abstain)."""
    label = max(probabilities, key=probabilities.get)
    return label if probabilities[label] >= min_confidence else UNCERTAIN


def as_dict(labels: list[str], probs: np.ndarray) -> dict:
    return {lab: float(v) for lab, v in zip(labels, probs)}


def window_dicts(labels: list[str], windows: list[tuple]) -> list[dict]:
    out = []
    for start, end, probs in windows:
        d = as_dict(labels, probs)
        out.append({"start": start, "end": end, "label": max(d, key=d.get), "probabilities": d})
    return out
