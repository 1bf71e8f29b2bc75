"""Checks of a labelled data set that trains without error but not as a user would expect (torch-free)."""

from __future__ import annotations

import warnings
from collections import defaultdict

from ..core.errors import UsageError


class DataWarning(UserWarning):
    """Data that trains, but not as a user would expect (a class one speaker shows, a tiny validation split)."""


def warn_about_data(rows: list[dict], labels: list[str], selects_on_val: bool) -> list[str]:
    """Warn (``DataWarning``) about what trains without error but not as a user would expect; returns the
    messages: classes shown by fewer than 2 speakers (a speaker-independent test of them is impossible or
    says nothing), and a validation split too small to select a model on."""
    messages = []
    speakers = defaultdict(set)
    for r in rows:
        speakers[r["label"]].add(r["speaker"])
    for lab in labels:
        if len(speakers[lab]) < 2:
            who = ", ".join(sorted(speakers[lab])) or "no speaker"
            messages.append(f"class {lab!r} is shown by {len(speakers[lab])} speaker(s) ({who}): a model cannot learn "
                            "it apart from that speaker's voice, and a fold holding that speaker out trains without "
                            "it; record it with more speakers, or drop it (--labels / data.labels)")
    val = [r for r in rows if r.get("split") == "val"]
    if selects_on_val and val:
        n_spk, missing = len({r["speaker"] for r in val}), [lab for lab in labels if lab not in {r["label"] for r in val}]
        if n_spk < 2 or len(val) < 2 * len(labels) or missing:
            why = "; ".join(x for x in (f"{n_spk} speaker(s)" if n_spk < 2 else "",
                                        f"{len(val)} recording(s)" if len(val) < 2 * len(labels) else "",
                                        f"no {', '.join(missing)}" if missing else "") if x)
            messages.append(f"the validation split is too small to select a model on ({why}): its figures are "
                            "noise; give it more speakers (data.split.val), or train a fixed number of epochs "
                            "(data.split.val: 0 and training.early_stopping: {select: last, patience: 0})")
    for message in messages:
        warnings.warn(message, DataWarning, stacklevel=2)
    return messages


def check_babble_pool(waveform, rows: list[dict]) -> None:
    """``training.augment.waveform`` (``waveform``) with ``babble_from: training`` needs, for every training
    speaker, 3 recordings of other training speakers (``UsageError`` otherwise)."""
    if waveform.babble_from != "training" or not waveform.copies:
        return
    per_speaker = defaultdict(int)
    for r in rows:
        if r.get("split") == "train":
            per_speaker[r["speaker"]] += 1
    fewest = min((sum(per_speaker.values()) - n for n in per_speaker.values()), default=0)
    if fewest < 3:
        raise UsageError(f"training.augment.waveform.babble_from: training mixes babble from 3-6 recordings of the "
                         f"other training speakers, and this run's {len(per_speaker)} training speaker(s) leave "
                         f"{fewest} for one of them; use babble_from: synthetic, or train on more speakers")
    if len(per_speaker) < 4:  # 3-6 voices drawn from one or two other people: hardly babble
        warnings.warn(f"training.augment.waveform.babble_from: training with {len(per_speaker)} training speakers: "
                      f"each recording's babble mixes voices of only {len(per_speaker) - 1} other speaker(s) (babble "
                      "wants 3 or more); babble_from: synthetic mixes 8 synthetic speakers", DataWarning, stacklevel=2)
