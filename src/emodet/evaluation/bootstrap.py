"""Confidence intervals of UAR, WA and macro-F1 by a bootstrap over speakers, in numpy only.

Recordings of one speaker are not independent (one voice, one room, one microphone), so the
interval resamples speakers, not recordings: each draw picks as many speakers as were tested,
with replacement, pools their predictions and computes the figures; the interval is the
central ``level`` share of the draws (percentile bootstrap). With one tested speaker there is
nothing to resample and the interval collapses to the point: ``n_speakers`` says so.

    ci = speaker_bootstrap(rows, labels, draws=1000, seed=0)   # rows: speaker, label, predicted
    ci["uar"]                                                   # {"value", "low", "high"}
"""

from __future__ import annotations

import numpy as np

from .metrics import confusion_matrix

METRICS = ("uar", "wa", "macro_f1")


def figures_of_confusions(cms: np.ndarray) -> dict[str, np.ndarray]:
    """UAR, WA and macro-F1 of a stack of confusion matrices ``(..., C, C)`` (the conventions of
    ``metrics_from_confusion``: classes absent from the targets are left out of UAR and macro-F1)."""
    cms = np.asarray(cms, dtype=np.float64)
    tp = np.diagonal(cms, axis1=-2, axis2=-1)
    support, predicted = cms.sum(-1), cms.sum(-2)
    present = support > 0
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=present)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    n_present = np.maximum(present.sum(-1), 1)
    total = np.maximum(support.sum(-1), 1)
    return {"uar": (recall * present).sum(-1) / n_present, "wa": tp.sum(-1) / total,
            "macro_f1": (f1 * present).sum(-1) / n_present}


def speaker_bootstrap(rows: list[dict], labels: list[str], draws: int = 1000, seed: int = 0,
                      level: float = 0.95) -> dict:
    """Point estimate and ``level`` interval of each figure, resampling speakers with replacement.

    ``rows``: predictions with ``speaker``, ``label`` and ``predicted`` (a predictions CSV). Returns
    ``{"uar": {"value", "low", "high"}, "wa": ..., "macro_f1": ..., "n_speakers", "draws", "seed", "level"}``;
    the same rows, draws and seed give the same interval.
    """
    index = {lab: i for i, lab in enumerate(labels)}
    speakers = sorted({r["speaker"] for r in rows})
    per_speaker = np.stack([confusion_matrix([index[r["label"]] for r in rows if r["speaker"] == s],
                                             [index[r["predicted"]] for r in rows if r["speaker"] == s], len(labels))
                            for s in speakers]) if speakers else np.zeros((0, len(labels), len(labels)))
    point = figures_of_confusions(per_speaker.sum(0))
    rng = np.random.default_rng(seed)
    # how often each speaker is drawn, one row a draw: the pooled confusion is a weighted sum
    counts = rng.multinomial(len(speakers), np.full(len(speakers), 1 / len(speakers)), size=draws) if speakers \
        else np.zeros((draws, 0))
    boot = figures_of_confusions(np.einsum("ds,sij->dij", counts, per_speaker))
    tail = (1 - level) / 2 * 100
    out = {m: {"value": float(point[m]), "low": float(np.percentile(boot[m], tail)),
               "high": float(np.percentile(boot[m], 100 - tail))} for m in METRICS}
    out.update({"n_speakers": len(speakers), "draws": draws, "seed": seed, "level": level})
    return out
