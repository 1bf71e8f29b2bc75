"""Sliding-window predictions merged into labelled segments of a long recording."""

from __future__ import annotations

import numpy as np


def smooth_segments(windows: list[dict], median: int = 3) -> list[dict]:
    """Merge sliding-window predictions into segments ``[{start, end, label, confidence}]``.

    Probabilities are smoothed over ``median`` neighbouring windows (a moving average), each
    window takes the top label, and runs of the same label merge; a segment ends where the
    next one's first window starts after its own midpoint, so segments never overlap.
    """
    if not windows:
        return []
    labels = list(windows[0]["probabilities"])
    probs = np.array([[w["probabilities"][lab] for lab in labels] for w in windows])
    k = max(1, int(median))
    if k > 1 and len(probs) > 2:
        pad = k // 2
        padded = np.pad(probs, ((pad, pad), (0, 0)), mode="edge")
        probs = np.stack([padded[i:i + k].mean(0) for i in range(len(probs))])
    top = probs.argmax(1)
    segments = []
    for i, w in enumerate(windows):
        label = labels[top[i]]
        if segments and segments[-1]["label"] == label:
            segments[-1]["end"] = w["end"]
            segments[-1]["_p"].append(probs[i, top[i]])
        else:
            if segments:  # boundary halfway through the overlap of neighbouring windows
                boundary = round((segments[-1]["end"] + w["start"]) / 2, 3) if w["start"] < segments[-1]["end"] else w["start"]
                segments[-1]["end"] = boundary
                start = boundary
            else:
                start = w["start"]
            segments.append({"start": start, "end": w["end"], "label": label, "_p": [probs[i, top[i]]]})
    for seg in segments:
        seg["confidence"] = round(float(np.mean(seg.pop("_p"))), 4)
    return segments
