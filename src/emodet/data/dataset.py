"""Map-style dataset over the feature cache, normalisation, padding and chunking.

Items are ``(features, label, length)``: ``features`` a float32 tensor ``(F, T)``, ``label``
an int index into ``labels``, ``length`` the number of valid frames ``T``. ``pad_collate``
batches them to ``(B, F, T_max)`` with the lengths.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..core.audio import window_starts
from ..core.errors import UsageError
from .cache import FeatureCache
from .manifest import resolve_path
from .normalize import Normalizer



def label_indices(rows: list[dict], labels: list[str], source: str = "manifest") -> list[int]:
    """Index of each row's label in ``labels`` (-1 for an ``unlabelled`` row); a label outside it is an error
    naming the row."""
    index = {lab: i for i, lab in enumerate(labels)}
    out = []
    for i, row in enumerate(rows):
        if row.get("unlabelled"):  # a recording only a distillation teacher labels
            out.append(-1)
            continue
        if row["label"] not in index:
            raise UsageError(f"{source}: row {i + 1} ({row['path']}) has label {row['label']!r}, "
                             f"not one of data.labels: {', '.join(labels)}")
        out.append(index[row["label"]])
    return out


def locate(row_path: str, root: str | Path | None, manifest_path: str | Path | None = None) -> tuple[Path, str]:
    """``(base, key)`` under which the feature cache stores a manifest row's file.

    Relative paths are keyed relative to the data root, so a moved corpus keeps its cache;
    absolute paths are keyed by themselves.
    """
    p = Path(row_path)
    if p.is_absolute():
        return Path(p.anchor), p.relative_to(p.anchor).as_posix()
    return resolve_path(".", root, manifest_path), p.as_posix()


def missing_file(manifest_path, i: int, row_path: str, root) -> UsageError:
    """The error for manifest row ``i`` whose file is not there; a relative path read without a data root
    says how to give one."""
    base, rel = locate(row_path, root, manifest_path)
    hint = ("; its paths are relative to a data root: pass --data-root DIR (the folder the manifest was "
            "prepared from)") if root is None and not Path(row_path).is_absolute() else ""
    return UsageError(f"{manifest_path or 'manifest'}, row {i + 1}: file not found: {Path(base, rel)}{hint}")


def frames_for_seconds(seconds: float | None, cache: FeatureCache) -> int | None:
    """Frames of ``seconds`` of audio for the cache's feature (``None`` for no limit)."""
    if seconds is None:
        return None
    hop = cache.params.get("hop_length") or int(round(0.010 * cache.sr))
    return max(1, int(math.ceil(seconds * cache.sr / hop)))


def row_cache(row: dict, cache: FeatureCache, variant_caches: dict | None) -> FeatureCache:
    """The cache holding a row's features: an augmented training copy's (a ``variant`` key, e.g. ``speed0.9``
    or ``aug1``) is its variant's."""
    return variant_caches[row["variant"]] if row.get("variant") else cache


class FeatureDataset(Dataset):
    """Cached features of manifest rows: items ``(features (F, T) float32, label int, length int)``.

    ``train=True`` crops a random window of ``max_seconds`` from longer items (shorter ones are
    padded later by ``pad_collate``); ``train=False`` returns the whole recording (or, with
    ``max_seconds`` and ``crop_eval=True``, its first ``max_seconds``). Missing cache entries
    are computed and stored. ``preload`` keeps every item in memory after the first read.
    ``extras`` (one entry a row, e.g. a teacher's logits) makes items 4-tuples. A row with a
    ``variant`` key (an augmented training copy) reads its features from ``variant_caches[variant]``.
    """

    def __init__(self, rows: list[dict], root: str | Path | None, cache: FeatureCache, labels: list[str], *,
                 train: bool = False, max_seconds: float | None = None, normalizer: Normalizer | None = None,
                 preload: bool = True, manifest_path: str | Path | None = None, crop_eval: bool = False,
                 extras=None, variant_caches: dict | None = None):
        if extras is not None and len(extras) != len(rows):
            raise ValueError(f"extras has {len(extras)} entries for {len(rows)} rows")
        self.extras = extras
        self.variant_caches = variant_caches or {}
        self.rows = list(rows)
        self.root = Path(root) if root is not None else None
        self.cache = cache
        self.labels = list(labels)
        self.targets = label_indices(self.rows, self.labels, str(manifest_path or "manifest"))
        self.train = train
        self.max_frames = frames_for_seconds(max_seconds, cache)
        self.normalizer = normalizer or Normalizer("none")
        self.manifest_path = manifest_path
        self.crop_eval = crop_eval
        self._memory: list[np.ndarray | None] | None = [None] * len(self.rows) if preload else None
        self._normalized: list[np.ndarray | None] | None = [None] * len(self.rows) if preload else None

    def __len__(self) -> int:
        return len(self.rows)

    def raw_features(self, i: int) -> np.ndarray:
        """Features of item ``i`` before normalisation and cropping, ``(F, T)``."""
        if self._memory is not None and self._memory[i] is not None:
            return self._memory[i]
        row = self.rows[i]
        base, rel = locate(row["path"], self.root, self.manifest_path)
        try:
            feats = np.asarray(row_cache(row, self.cache, self.variant_caches).load(base, rel), dtype=np.float32)
        except FileNotFoundError:
            raise missing_file(self.manifest_path, i, row["path"], self.root) from None
        if self._memory is not None:
            self._memory[i] = feats
        return feats

    def normalized_features(self, i: int) -> np.ndarray:
        """Features of item ``i`` after normalisation, before cropping (kept in memory with ``preload``)."""
        if self._normalized is not None and self._normalized[i] is not None:
            return self._normalized[i]
        feats = np.ascontiguousarray(self.normalizer(self.raw_features(i), self.rows[i]), dtype=np.float32)
        if self._normalized is not None:
            self._normalized[i] = feats
            self._memory[i] = None  # the raw copy is no longer needed
        return feats

    def __getitem__(self, i: int):
        feats = self.normalized_features(i)
        n = feats.shape[1]
        if self.max_frames is not None and n > self.max_frames and (self.train or self.crop_eval):
            start = int(torch.randint(0, n - self.max_frames + 1, (1,))) if self.train else 0
            feats = feats[:, start:start + self.max_frames]
        x = torch.from_numpy(feats)
        if self.extras is not None:
            return x, self.targets[i], x.shape[1], self.extras[i]
        return x, self.targets[i], x.shape[1]

    def __getitems__(self, indices):
        """Batched fetch: ``DataLoader`` calls it once a batch instead of once an item (less overhead)."""
        return [self[i] for i in indices]


def pad_collate(batch):
    """``[(F, T_i), label, length(, key)]`` -> ``x (B, F, T_max)`` zero-padded, ``y (B,)``, ``lengths (B,)`` (, keys)."""
    feats, labels, lengths = zip(*(item[:3] for item in batch))
    t_max = max(lengths)
    if min(lengths) == t_max:  # equal lengths (crops, functionals): one copy
        x = torch.stack(feats)
    else:
        x = feats[0].new_zeros((len(feats), feats[0].shape[0], t_max))
        for i, f in enumerate(feats):
            x[i, :, : f.shape[1]] = f
    out = (x, torch.as_tensor(labels, dtype=torch.long), torch.as_tensor(lengths, dtype=torch.long))
    return out + ([item[3] for item in batch],) if len(batch[0]) > 3 else out


def chunk_features(x: torch.Tensor, chunk_frames: int, hop_frames: int | None = None):
    """Cut ``(F, T)`` into windows ``(n, F, chunk_frames)`` (the last one zero-padded) with their lengths."""
    starts = window_starts(x.shape[1], chunk_frames, hop_frames or chunk_frames)
    out = x.new_zeros((len(starts), x.shape[0], chunk_frames))
    lengths = []
    for k, s in enumerate(starts):
        piece = x[:, s:s + chunk_frames]
        out[k, :, : piece.shape[1]] = piece
        lengths.append(piece.shape[1])
    return out, torch.as_tensor(lengths, dtype=torch.long)


def chunk_collate(chunk_frames: int, hop_frames: int | None = None):
    """A collate function that cuts each item into chunks; returns ``x, y, lengths, owner`` (item of each chunk)."""

    def collate(batch):
        xs, ls, owners = [], [], []
        for k, (feats, _, _) in enumerate(batch):
            chunks, lengths = chunk_features(feats, chunk_frames, hop_frames)
            xs.append(chunks)
            ls.append(lengths)
            owners += [k] * len(chunks)
        y = torch.as_tensor([b[1] for b in batch], dtype=torch.long)
        return torch.cat(xs), y, torch.cat(ls), torch.as_tensor(owners, dtype=torch.long)

    return collate


def pool_chunks(outputs: torch.Tensor, owner: torch.Tensor, n_items: int) -> torch.Tensor:
    """Average chunk outputs ``(n_chunks, C)`` per item: ``(n_items, C)``."""
    sums = outputs.new_zeros((n_items, outputs.shape[1])).index_add_(0, owner, outputs)
    counts = torch.bincount(owner, minlength=n_items).clamp(min=1).to(outputs.dtype)
    return sums / counts[:, None]
