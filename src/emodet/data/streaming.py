"""Iterable dataset for corpora larger than memory: streams a manifest or tar shards.

Memory is bounded by the shuffle buffer: the manifest is read row by row, tar shards member
by member. Items are split over DataLoader workers and DDP ranks by position (item ``i`` goes
to global worker ``i mod (ranks x workers)``), so every item is read exactly once an epoch
across all of them. Shuffling happens in a buffer seeded by ``(seed, epoch, global worker)``,
so a run is deterministic for a seed. Ranks may receive one item more or fewer than others.

Tar shards (WebDataset layout): members grouped by key, ``<key>.<audio ext>`` holding the audio
and ``<key>.json`` holding at least ``{"label": ..., "speaker": ...}``.
"""

from __future__ import annotations

import csv
import json
import os
import random
import tarfile
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..core.audio import decode_audio_bytes, is_audio_file
from ..core.errors import AudioError, EmodetError, UsageError
from ..features import compute_feature, compute_feature_from_file, get_feature_spec, resolve_params
from .cache import FeatureCache
from .dataset import locate
from .normalize import Normalizer


def _distributed_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class StreamingDataset(IterableDataset):
    """Stream ``(features (F, T), label, length)`` (and the item's key with ``return_keys``).

    ``source``: a manifest CSV, or a list of ``.tar`` shards. ``cache``: a ``FeatureCache``
    read first and filled as items are computed (manifests only); without one, features are
    computed on the fly. ``split`` keeps manifest rows of one split. Bad files are skipped
    and counted in ``self.skipped`` (per worker) unless ``on_error="raise"``.
    """

    def __init__(self, source, labels: list[str], *, root: str | Path | None = None, feature: str = "logmel",
                 params: dict | None = None, sr: int = 16000, cache: FeatureCache | None = None,
                 split: str | None = None, shuffle_buffer: int = 0, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None, max_frames: int | None = None, normalizer: Normalizer | None = None,
                 return_keys: bool = False, on_error: str = "skip"):
        super().__init__()
        if isinstance(source, (str, os.PathLike)) and str(source).endswith(".tar"):
            source = [source]
        self.shards = [Path(s) for s in source] if isinstance(source, (list, tuple)) else None
        self.manifest = None if self.shards is not None else Path(source)
        for path in self.shards or [self.manifest]:
            if not path.is_file():
                raise UsageError(f"streaming source {path}: file not found")
        self.labels = list(labels)
        self._label_index = {lab: i for i, lab in enumerate(self.labels)}
        self.root = Path(root) if root is not None else None
        self.cache = cache
        self.feature = cache.feature if cache is not None else feature
        self.params = cache.params if cache is not None else resolve_params(feature, params)
        self.sr = cache.sr if cache is not None else sr
        if cache is None:  # as a cache checks at its start
            get_feature_spec(self.feature).check_at_rate(self.params, self.sr)
        self.split, self.shuffle_buffer, self.seed = split, shuffle_buffer, seed
        self.rank, self.world_size = rank, world_size
        self.max_frames, self.return_keys, self.on_error = max_frames, return_keys, on_error
        self.normalizer = normalizer or Normalizer("none")
        self.epoch = 0
        self.skipped: list[dict] = []

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle differently each epoch (call before iterating, on every rank)."""
        self.epoch = epoch

    # -- records -----------------------------------------------------------------------------
    def _manifest_records(self) -> Iterator[tuple[str, dict, object]]:
        with open(self.manifest, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                if self.split is None or row.get("split") == self.split:
                    yield row["path"], row, None

    def _shard_records(self) -> Iterator[tuple[str, dict, object]]:
        for shard in self.shards:
            group_key, group = None, {}
            with tarfile.open(shard, "r|*") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    name = PurePosixPath(member.name)
                    key = str(name.parent / name.name.split(".")[0])
                    if key != group_key and group:
                        yield from self._complete(shard, group_key, group)
                        group = {}
                    group_key = key
                    group[name.name.split(".", 1)[1].lower()] = tar.extractfile(member).read()
                if group:
                    yield from self._complete(shard, group_key, group)

    def _complete(self, shard: Path, key: str, group: dict) -> Iterator[tuple[str, dict, object]]:
        audio = next((v for ext, v in group.items() if is_audio_file("x." + ext)), None)
        meta = json.loads(group["json"]) if "json" in group else None
        if audio is None or meta is None:
            self._skip(f"{shard}:{key}", "tar group needs an audio member and a .json member")
            return
        yield key, meta, audio

    # -- items -------------------------------------------------------------------------------
    def _skip(self, key: str, error: str) -> None:
        if self.on_error == "raise":
            raise AudioError(f"{key}: {error}")
        self.skipped.append({"path": key, "error": error})

    def _features(self, key: str, meta: dict, audio: object) -> np.ndarray:
        if audio is None:
            base, rel = locate(key, self.root, self.manifest)
            if self.cache is not None:
                return np.asarray(self.cache.load(base, rel))
            return compute_feature_from_file(self.feature, base / rel, self.sr, self.params)[0]
        wav, rate = decode_audio_bytes(audio, key, None if get_feature_spec(self.feature).native_rate else self.sr)
        return compute_feature(self.feature, wav, rate, self.params)

    def _items(self, gid: int, total: int) -> Iterator:
        records = self._manifest_records() if self.manifest is not None else self._shard_records()
        for index, (key, meta, audio) in enumerate(records):
            if index % total != gid:
                continue
            label = self._label_index.get(meta.get("label"))
            if label is None:
                self._skip(key, f"label {meta.get('label')!r} is not one of {', '.join(self.labels)}")
                continue
            try:
                feats = self._features(key, meta, audio)
            except (AudioError, FileNotFoundError) as exc:
                self._skip(key, str(exc))
                continue
            except EmodetError as exc:
                self._skip(key, str(exc))
                continue
            feats = self.normalizer(feats, meta)
            yield key, feats, label

    def __iter__(self):
        info = get_worker_info()
        wid, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rank, world = _distributed_rank_world()
        rank = self.rank if self.rank is not None else rank
        world = self.world_size if self.world_size is not None else world
        gid, total = rank * n_workers + wid, world * n_workers
        rng = random.Random(hash((self.seed, self.epoch, gid)) & 0xFFFFFFFF)
        crop_rng = np.random.default_rng([self.seed, self.epoch, gid])
        buffer: list = []
        for item in self._items(gid, total):
            if self.shuffle_buffer > 1:
                buffer.append(item)
                if len(buffer) >= self.shuffle_buffer:
                    yield self._emit(buffer.pop(rng.randrange(len(buffer))), crop_rng)
            else:
                yield self._emit(item, crop_rng)
        rng.shuffle(buffer)
        for item in buffer:
            yield self._emit(item, crop_rng)

    def _emit(self, item, crop_rng):
        key, feats, label = item
        n = feats.shape[1]
        if self.max_frames is not None and n > self.max_frames:
            start = int(crop_rng.integers(0, n - self.max_frames + 1))
            feats = feats[:, start:start + self.max_frames]
        x = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))
        out = (x, label, x.shape[1])
        return out + (key,) if self.return_keys else out
