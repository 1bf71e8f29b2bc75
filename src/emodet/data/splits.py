"""Speaker-independent splits: train/val/test, k folds by speaker, leave one speaker out.

Every function groups by speaker (no speaker ever on two sides), balances label counts as
far as the groups allow, and is deterministic for a seed.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ..core.errors import UsageError


def _speaker_label_matrix(rows: list[dict]) -> tuple[list[str], list[str], np.ndarray]:
    speakers = sorted({r["speaker"] for r in rows})
    labels = sorted({r["label"] for r in rows})
    s_idx = {s: i for i, s in enumerate(speakers)}
    l_idx = {lab: i for i, lab in enumerate(labels)}
    counts = np.zeros((len(speakers), len(labels)))
    for r in rows:
        counts[s_idx[r["speaker"]], l_idx[r["label"]]] += 1
    return speakers, labels, counts


def _n_speakers(value: float, n_total: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise UsageError(f"--{name} must be a fraction of speakers in [0, 1) or a number of speakers, got {value!r}")
    if isinstance(value, float) and value < 1:
        return 0 if value == 0 else max(1, int(round(value * n_total)))
    if float(value) != int(value):
        raise UsageError(f"--{name} {value!r}: give a fraction below 1 or a whole number of speakers")
    return int(value)


def _score(assign: np.ndarray, counts: np.ndarray, targets: np.ndarray) -> float:
    """Distance of each set's label counts from its ideal share (targets = file share of each set)."""
    total = counts.sum(0)
    score = 0.0
    for k, share in enumerate(targets):
        got = counts[assign == k].sum(0)
        score += np.abs(got - total * share).sum()
    return score


def _improve(assign: np.ndarray, counts: np.ndarray, targets: np.ndarray, fixed_sizes: bool) -> np.ndarray:
    """Swap speakers between sets while the score drops (keeps each set's speaker count)."""
    best = _score(assign, counts, targets)
    improved = True
    while improved:
        improved = False
        for i in range(len(assign)):
            for j in range(i + 1, len(assign)):
                if assign[i] == assign[j]:
                    continue
                assign[i], assign[j] = assign[j], assign[i]
                s = _score(assign, counts, targets)
                if s < best - 1e-9:
                    best, improved = s, True
                else:
                    assign[i], assign[j] = assign[j], assign[i]
    return assign


def speaker_independent_split(rows: list[dict], val: float = 0.1, test: float = 0.2, seed: int = 0,
                              tries: int = 200) -> dict[str, str]:
    """Assign each speaker to ``train``, ``val`` or ``test``: ``{speaker: split}``.

    ``val``/``test`` below 1 are fractions of the speakers (at least one speaker when
    non-zero); whole numbers are speaker counts. Label counts of each set are kept as close
    as the speakers allow to the set's share of the files.
    """
    speakers, _, counts = _speaker_label_matrix(rows)
    n = len(speakers)
    n_test, n_val = _n_speakers(test, n, "test"), _n_speakers(val, n, "val")
    n_train = n - n_test - n_val
    wanted = ["train"] + (["val"] if n_val else []) + (["test"] if n_test else [])
    if n_train < 1:
        listing = ", ".join(speakers[:10]) + (" ..." if n > 10 else "")
        raise UsageError(f"a {'/'.join(wanted)} split by speaker needs at least {n_val + n_test + 1} speakers "
                         f"({n_val} val, {n_test} test, at least 1 train); the data has {n} ({listing}). "
                         "Lower --val/--test or add speakers")
    sizes = [n_train, n_val, n_test]
    base = np.repeat(np.arange(3), sizes)
    rng = np.random.default_rng(seed)
    best_assign, best_score = None, np.inf
    for _ in range(max(1, tries)):
        assign = rng.permutation(base)
        share = np.array([counts[assign == k].sum() for k in range(3)]) / counts.sum()
        s = _score(assign, counts, share)
        if s < best_score:
            best_assign, best_score = assign, s
    share = np.array([counts[best_assign == k].sum() for k in range(3)]) / counts.sum()
    best_assign = _improve(best_assign.copy(), counts, share, fixed_sizes=True)
    names = np.array(["train", "val", "test"])
    return {spk: str(names[k]) for spk, k in zip(speakers, best_assign)}


def speaker_folds(rows: list[dict], k: int, seed: int = 0) -> dict[str, int]:
    """Group speakers into ``k`` folds of similar size and label mix: ``{speaker: fold}``."""
    speakers, _, counts = _speaker_label_matrix(rows)
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise UsageError(f"--folds must be an integer >= 2 (or 'loso'), got {k!r}")
    if k > len(speakers):
        raise UsageError(f"{k} folds by speaker need at least {k} speakers; the data has {len(speakers)}. "
                         "Use fewer folds or leave-one-speaker-out (--folds loso)")
    rng = np.random.default_rng(seed)
    order = sorted(range(len(speakers)), key=lambda i: (-counts[i].sum(), rng.random()))
    total = counts.sum(0)
    fold_counts = np.zeros((k, counts.shape[1]))
    assign = np.zeros(len(speakers), dtype=int)
    for i in order:
        cost = [np.abs(fold_counts[f] + counts[i] - total / k).sum() - np.abs(fold_counts[f] - total / k).sum()
                + 1e-6 * fold_counts[f].sum() for f in range(k)]
        f = int(np.argmin(cost))
        assign[i] = f
        fold_counts[f] += counts[i]
    assign = _improve(assign, counts, np.full(k, 1.0 / k), fixed_sizes=True)
    return {spk: int(f) for spk, f in zip(speakers, assign)}


def loso_folds(rows: list[dict]) -> dict[str, int]:
    """Leave one speaker out: fold ``i`` holds out the ``i``-th speaker in sorted order."""
    return {spk: i for i, spk in enumerate(sorted({r["speaker"] for r in rows}))}


def corpus_folds(rows: list[dict]) -> dict[str, int]:
    """Leave one corpus out: fold ``i`` holds out every speaker of the ``i``-th corpus in sorted order
    (a manifest's ``corpus`` column); a speaker found in two corpora is refused."""
    corpus_of: dict[str, str] = {}
    for r in rows:
        corpus = r.get("corpus") or ""
        if corpus_of.setdefault(r["speaker"], corpus) != corpus:
            raise UsageError(f"speaker {r['speaker']!r} is in corpora {corpus_of[r['speaker']]!r} and {corpus!r}; "
                             "leave-one-corpus-out needs each speaker in one corpus (prefix speakers with their corpus)")
    corpora = sorted(set(corpus_of.values()))
    if len(corpora) < 2:
        raise UsageError(f"leave-one-corpus-out needs a manifest of at least 2 corpora (its corpus column); this one "
                         f"has {len(corpora)} ({', '.join(corpora) or 'none'}): make one with emodet data prepare "
                         "--corpus A --root DIR_A --corpus B --root DIR_B ...")
    return {spk: corpora.index(c) for spk, c in corpus_of.items()}


def assign_splits(rows: list[dict], val: float = 0.1, test: float = 0.2, folds: int | None = 5,
                  seed: int = 0) -> list[dict]:
    """Write ``split``, ``fold`` (k folds by speaker) and ``loso_fold`` into each row (in place)."""
    n_speakers = len({r["speaker"] for r in rows})
    split = speaker_independent_split(rows, val, test, seed)
    fold = speaker_folds(rows, min(folds, n_speakers), seed) if folds and n_speakers >= 2 else None
    loso = loso_folds(rows)
    for r in rows:
        r["split"] = split[r["speaker"]]
        if fold is not None:
            r["fold"] = fold[r["speaker"]]
        r["loso_fold"] = loso[r["speaker"]]
    return rows


def split_summary(rows: list[dict]) -> str:
    """One line a split: speakers, files and label counts."""
    lines = []
    for split in ("train", "val", "test"):
        sel = [r for r in rows if r.get("split") == split]
        if sel:
            labels = Counter(r["label"] for r in sel)
            lines.append(f"  {split:<5} {len({r['speaker'] for r in sel}):3d} speakers {len(sel):6d} files  "
                         + ", ".join(f"{k} {v}" for k, v in sorted(labels.items())))
    return "\n".join(lines)
