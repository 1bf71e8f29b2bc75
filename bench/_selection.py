"""Nested selection shared by the benchmarks: a recipe's settings chosen by inner folds over the training
groups alone (leave one corpus out in bench/cross_corpus.py, leave one speaker out in bench/accuracy.py),
never by the held-out group.

The inner fits are the linear recipes' model (multinomial logistic regression with balanced class
weights and L2 = weight_decay, which emodet's L-BFGS head equals: tests/test_training.py) fitted by
scikit-learn on the cached features, normalised as emodet's normaliser does, for speed; the outer
figure of the chosen candidate runs through emodet itself.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np

from emodet.core.errors import EmodetError
from emodet.data.cache import FeatureCache
from emodet.data.dataset import locate
from emodet.evaluation.metrics import classification_metrics


def grid(**axes) -> dict[str, list[str]]:
    """Named candidates: every combination of the axes' ``(name, overrides)`` choices."""
    out = {}
    for combo in itertools.product(*axes.values()):
        out["_".join(name for name, _ in combo)] = [o for _, overrides in combo for o in overrides]
    return out


_LOADED: dict = {}


def features(cfg, paths: tuple, root: Path | None, manifest: Path | None, copy: int | None = None) -> np.ndarray:
    """The cached features of ``paths`` (manifest rows' paths, under ``root`` or the manifest's folder) for
    ``cfg`` (augmented copy ``copy`` of them if given); every layer is read once and the layer views are
    cut in memory."""
    from emodet.data.augment import AugmentCopy
    from emodet.features import apply_view

    f = cfg.features
    full_params = {**f.params, "layers": "all"} if f.type == "encoder" else dict(f.params)
    augment = AugmentCopy(cfg.training.augment.waveform.to_dict(), copy, cfg.training.seed) if copy is not None else None
    key = (f.type, json.dumps(full_params, sort_keys=True), json.dumps(augment.key()) if augment else None)
    loaded = _LOADED.setdefault(key, {})  # one entry a file: the selections' many row sets share them
    cache = FeatureCache(f.cache_dir, f.type, full_params, sr=cfg.data.sample_rate, augment=augment)
    for p in paths:
        if p not in loaded:
            loaded[p] = cache.load(*locate(p, root, manifest))
    view = {**full_params, **f.params}
    return np.stack([apply_view(cache.spec, loaded[p], view)[:, 0] for p in paths]).astype(np.float64)


def normalised(x: np.ndarray, copies: list[np.ndarray], rows: list[dict], test: np.ndarray, mode: str,
               nap: int, whiten: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """``(training matrix with the augmented copies, test matrix)`` z-scored as emodet's normaliser does:
    the training rows' statistics (``global``) or each corpus's own (``corpus``; augmented copies a group
    of their own; ``whiten``, a method: then whitened by the group's own matrix), then ``nap`` speaker directions of
    the training rows projected out."""
    from emodet.core.stats import whitening

    train_parts = [x[~test], *(c[~test] for c in copies)]
    if mode == "global":
        pooled = np.concatenate(train_parts)
        mean, std = pooled.mean(0), np.maximum(pooled.std(0), 1e-5)
        train, held = (pooled - mean) / std, (x[test] - mean) / std
    elif mode == "corpus":
        def by_corpus(m):
            z = np.empty_like(m)
            for corpus in {r["corpus"] for r in rows}:
                idx = np.array([r["corpus"] == corpus for r in rows])
                z[idx] = (m[idx] - m[idx].mean(0)) / np.maximum(m[idx].std(0), 1e-5)
                if whiten != "none":
                    z[idx] = z[idx] @ whitening([z[idx].T], whiten).astype(np.float64)  # symmetric: W z = z W per row
            return z
        zs = [by_corpus(m) for m in (x, *copies)]
        train, held = np.concatenate([z[~test] for z in zs]), zs[0][test]
    else:
        raise ValueError(f"normalisation {mode!r}: the selection knows global and corpus")
    if nap:
        speakers = np.array([r["speaker"] for r in rows])[~test]
        base = train[: int((~test).sum())]
        means = np.stack([base[speakers == s].mean(0) for s in np.unique(speakers)])
        u = np.linalg.svd(means - means.mean(0), full_matrices=False)[2][:nap].T
        train, held = train - (train @ u) @ u.T, held - (held @ u) @ u.T
    return train, held


def inner_uar(cfg, rows: list[dict], labels: list[str], fold_by: str, mode: str, root: Path | None,
              manifest: Path | None) -> float:
    """Mean UAR of ``cfg``'s linear recipe over leave-one-``fold_by``-out folds of ``rows`` (NaN where a fold
    has no more training speakers than ``data.nap`` directions: not a candidate there)."""
    from sklearn.linear_model import LogisticRegression

    paths = tuple(r["path"] for r in rows)
    y = np.array([labels.index(r["label"]) for r in rows])
    x = features(cfg, paths, root, manifest)
    copies = [features(cfg, paths, root, manifest, k) for k in range(cfg.training.augment.waveform.copies)]
    uars = []
    for held in sorted({r[fold_by] for r in rows}):
        test = np.array([r[fold_by] == held for r in rows])
        if cfg.data.nap >= len({r["speaker"] for r, t in zip(rows, test) if not t}):
            return float("nan")
        z_train, z_test = normalised(x, copies, rows, test, mode, cfg.data.nap, cfg.data.whiten)
        y_train = np.concatenate([y[~test]] * (1 + len(copies)))
        lr = LogisticRegression(C=1 / (cfg.training.weight_decay * len(y_train)), class_weight="balanced",
                                max_iter=3000)
        lr.fit(z_train, y_train)
        uars.append(classification_metrics(y[test], lr.predict(z_test), labels)["uar"])
    return float(np.mean(uars))


def choose(cfgs: dict, rows: list[dict], labels: list[str], fold_by: str, mode: str, root: Path | None,
           manifest: Path | None, runs_dir: Path, record: dict) -> tuple[str, dict[str, float]]:
    """``(the best candidate, every candidate's inner UAR)`` among ``cfgs`` ({name: config}) by
    leave-one-``fold_by``-out over ``rows``; the scores and the choice are appended to ``runs_dir``'s
    selection.jsonl with ``record`` (what was held out, for which config)."""
    scores = {name: inner_uar(cfg, rows, labels, fold_by, mode, root, manifest) for name, cfg in cfgs.items()}
    chosen = best(scores)
    log_selection(runs_dir, {**record, "scores": scores, "chosen": chosen})
    return chosen, scores


def best(scores: dict[str, float]) -> str:
    """The candidate with the highest score (NaN: not a candidate); the first listed on a tie."""
    valid = [k for k in scores if scores[k] == scores[k]]
    if not valid:
        raise EmodetError(f"no candidate could be scored ({', '.join(scores)}): each needs more training speakers in "
                          "every inner fold than its data.nap directions; lower data.nap (--set data.nap=0)")
    return max(valid, key=scores.get)


def log_selection(runs_dir: Path, record: dict) -> None:
    """One line of ``selection.jsonl`` in ``runs_dir``: what was scored and chosen, for the record."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    with open(runs_dir / "selection.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")
