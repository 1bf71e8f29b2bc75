"""Feature normalisation (z-score per feature dimension), in numpy only.

Modes, and when each fits:

- ``global``: one mean/std from the training split. Needs nothing at test time: the only mode
  for one new recording from an unknown speaker and room (the shipped general recipes use it).
- ``corpus``: one mean/std per corpus (a manifest's ``corpus`` column), each from that corpus's
  own recordings, labels unused. At deployment the statistics come from unlabelled recordings
  of the new domain (``EmotionPredictor.adapt(recordings)``, ``emodet predict --adapt DIR``):
  for a user with a folder of their own recordings (a call centre's line, a lab's microphone).
- ``speaker``: one mean/std per speaker from that speaker's own recordings, labels unused; a
  held-out speaker is normalised with statistics of its own unlabelled test recordings (reports
  say so). At deployment it needs enrollment (``calibrate`` with a few recordings of the speaker).
  Strong on acted corpora where every speaker shows every emotion; it erases the signal where a
  speaker shows mostly one emotion.
- ``none``: features as they are.

``whiten`` (with ``corpus``: ``coral`` or ``ledoit-wolf``): after each corpus's z-score, its features are
whitened by that corpus's own regularised correlation matrix (``core.stats.whitening``), so every corpus, the
new domain's at deployment too (``--adapt DIR``), has like second-order statistics: CORAL-like alignment.

``nap`` (nuisance attribute projection, with any mode): after the z-score, the top-k principal
directions of the training speakers' mean vectors are projected out. Speakers differ there (voice,
microphone, room: what also differs between corpora), while emotions vary within each speaker;
learnt from training data alone, it needs nothing at deployment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..core.errors import UsageError
from ..core.stats import WHITENING, frame_moments, whitening

NORMALIZE_MODES = ("none", "global", "corpus", "speaker")
GROUPED_MODES = ("corpus", "speaker")  # statistics per group of recordings, needed again at deployment


def norm_group(mode: str, row: dict) -> str:
    """The group whose statistics normalise ``row``: its speaker or its corpus (an augmented training copy,
    e.g. speed-perturbed, is a group of its own: to the features a perturbed voice is another voice)."""
    variant = f"@{row['variant']}" if row.get("variant") else ""
    if mode == "speaker":
        return f"{row['speaker']}{variant}"
    return f"{row.get('corpus') or 'corpus'}{variant}"


def check_nap(k: int, speakers: int) -> None:
    """``data.nap`` ``k`` needs more than ``k`` training speakers (``UsageError`` naming the largest that works)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise UsageError(f"data.nap must be 0 (none) or a number of speaker directions, got {k!r}")
    if k and speakers <= k:
        raise UsageError(f"data.nap {k}: projecting out {k} speaker directions needs more than {k} training "
                         f"speakers; this run trains on {speakers} (set data.nap to at most {max(speakers - 1, 0)}, or 0 for none)")


def check_whiten(whiten: str, mode: str) -> None:
    """``data.whiten`` is ``none`` or a ``WHITENING`` method, the latter only with ``corpus`` normalisation."""
    if whiten not in ("none", *WHITENING):
        raise UsageError(f"data.whiten {whiten!r}: valid values are none, {', '.join(WHITENING)}")
    if whiten != "none" and mode != "corpus":
        raise UsageError(f"data.whiten aligns each corpus's statistics and needs data.normalize: corpus, not {mode!r} "
                         "(per speaker, a few recordings cannot estimate a whitening matrix; global statistics have "
                         "no domain to align)")


@dataclass
class Normalizer:
    """``normalizer(features (F, T), row) -> (F, T)``; ``fit`` takes the statistics, ``to_dict`` what a run saves."""

    mode: str = "none"
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    groups: dict = field(default_factory=dict)  # group (speaker or corpus) -> (mean, std)
    nap: np.ndarray | None = None  # (F, k) orthonormal directions projected out after the z-score
    whiten: str = "none"  # ``corpus`` mode: a ``WHITENING`` method, each group's z-scores whitened by its own matrix
    whitened: dict = field(default_factory=dict)  # group -> (F, F) whitening matrix

    @classmethod
    def fit(cls, mode: str, rows: list[dict], load: Callable[[dict], np.ndarray], nap: int = 0,
            train_rows: list[dict] | None = None, whiten: str = "none") -> "Normalizer":
        """Statistics for ``mode`` from ``rows`` (``global``: pass the training rows only); ``nap`` > 0 learns
        that many nuisance directions from ``train_rows`` (default: ``rows``); ``whiten`` (``corpus`` mode) a
        whitening matrix per corpus by that method."""
        check_whiten(whiten, mode)
        if mode in (None, False, "none"):
            out = cls("none")
        elif mode not in NORMALIZE_MODES:
            raise UsageError(f"data.normalize {mode!r}: valid values are {', '.join(NORMALIZE_MODES)}")
        elif mode == "global":
            out = cls("global", *frame_moments(load(r) for r in rows))
        else:
            by_group: dict[str, list[dict]] = {}
            for r in rows:
                by_group.setdefault(norm_group(mode, r), []).append(r)
            out = cls(mode, groups={g: frame_moments(load(r) for r in group) for g, group in by_group.items()})
            if whiten != "none":
                out.whiten = whiten
                out.whitened = {g: whitening((out._zscore(np.asarray(load(r), np.float64), g) for r in group), whiten)
                                for g, group in by_group.items()}
        if nap:
            out.nap = out._nuisance(train_rows if train_rows is not None else rows, load, nap)
        return out

    def _nuisance(self, rows: list[dict], load, k: int) -> np.ndarray:
        speakers: dict[str, list[np.ndarray]] = {}
        for r in rows:
            speakers.setdefault(r["speaker"], []).append(self(np.asarray(load(r), np.float64), r).mean(1))
        check_nap(k, len(speakers))
        means = np.stack([np.mean(v, 0) for v in speakers.values()])
        _, _, vt = np.linalg.svd(means - means.mean(0), full_matrices=False)
        return vt[:k].T.astype(np.float32)

    def __call__(self, feats: np.ndarray, row: dict | None = None) -> np.ndarray:
        if self.mode == "none":
            out = feats
        elif self.mode == "global":
            out = (feats - self.mean[:, None]) / self.std[:, None]
        else:
            group = norm_group(self.mode, row or {})
            if group not in self.groups:
                raise UsageError(f"per-{self.mode} normalisation has no statistics for {self.mode} {group!r}")
            out = self._zscore(feats, group)
            if self.whiten != "none":
                out = self.whitened[group] @ out
        if self.nap is not None:
            out = out - self.nap @ (self.nap.T @ out)
        return out

    def _zscore(self, feats: np.ndarray, group: str) -> np.ndarray:
        mean, std = self.groups[group]
        return (feats - mean[:, None]) / std[:, None]

    def to_dict(self) -> dict:
        out = {"mode": self.mode}
        if self.whiten != "none":
            out["whiten"] = self.whiten
        if self.mode == "global":
            out.update(mean=self.mean.tolist(), std=self.std.tolist())
        if self.nap is not None:
            out["nap"] = self.nap.T.tolist()  # k rows of F
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Normalizer":
        nap = np.asarray(d["nap"], np.float32).T if d.get("nap") else None
        if d.get("mode") == "global":
            return cls("global", np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32), nap=nap)
        return cls(d.get("mode", "none"), nap=nap, whiten=d.get("whiten", "none"))
