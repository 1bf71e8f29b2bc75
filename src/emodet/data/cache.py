"""Feature cache: one ``.npy`` file per (audio file, feature configuration), written atomically.

Layout under ``cache_dir``::

    <feature>-<config hash>/          one folder per feature name + parameters + sample rate
        config.json                   what the hash stands for
        report.json                   the last build's summary and its failed files
        <aa>/<path hash>-<file hash>.npy

``path hash`` is the hash of the file's absolute path (so a corpus named through its root, a
manifest's folder or a link finds the same entries); ``file hash`` is the hash of its size,
modification time and content (its first and last 64 KB), so two files that once had one path,
or two corpora with the same file names, never share entries. Changing a parameter selects
another folder (all recomputed); touching a file changes its entry name (only it recomputed,
the old entry is removed); a moved corpus computes its entries again. Entries appear by ``os.replace`` only, so a build killed at any moment leaves
complete entries and temporary files, which the next build removes; two builds at once
write the same bytes to the same names and never corrupt each other.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path
from typing import Iterable

import numpy as np

from .. import __version__
from ..core.audio import DEFAULT_SAMPLE_RATE, check_speed_factors
from ..core.files import list_audio_files
from ..core.progress import progress_bar
from ..core.errors import AudioError, EmodetError, UsageError
from ..features import (apply_view, canonical_params, check_feature_output, compute_feature_from_file, get_feature_spec,
                        resolve_params)
from ..core.io import atomic_save_npy, atomic_write_json, remove_stale_temp_files
from .cache_build import BuildReport, in_shard, init_worker, parse_shard, single_thread


def file_signature(path: Path, sample: int = 65536, with_time: bool = True) -> str:
    """10 hex digits of the file's size, modification time and first and last ``sample`` bytes: cheap
    (two small reads), and it tells apart two files of the same name, size and time with other audio.
    ``with_time=False``: of the content alone (a copy of a file has its signature)."""
    st = os.stat(path)
    digest = hashlib.sha1(f"{st.st_size}:{st.st_mtime_ns if with_time else ''}".encode())
    with open(path, "rb") as fh:
        digest.update(fh.read(sample))
        if st.st_size > sample:
            fh.seek(max(sample, st.st_size - sample))
            digest.update(fh.read(sample))
    return digest.hexdigest()[:10]


class FeatureCache:
    """Features of the files under one data root for one feature configuration.

    ``FeatureCache(cache_dir, "mfcc", {"n_mfcc": 40}, sr=16000)``; ``get(root, relpath)``
    returns ``(features, frames)`` float32 or ``None``; ``load(root, relpath)`` computes and
    stores what is missing; ``build(root)`` fills the cache for every audio file.
    ``speed``: features of the files speed-perturbed by that factor; ``augment``: of one augmented copy of
    them (``emodet.data.augment.AugmentCopy``); each a folder of its own.
    """

    def __init__(self, cache_dir: str | os.PathLike, feature: str, params: dict | None = None,
                 sr: int = DEFAULT_SAMPLE_RATE, mmap: bool = False, speed: float | None = None, augment=None):
        self.spec = spec = get_feature_spec(feature)
        self.feature = spec.name
        self.params = resolve_params(feature, params)
        self.sr = int(sr)
        spec.check_at_rate(self.params, self.sr)  # e.g. fmax above sr/2: refused before any file
        self.mmap = mmap
        # not in the key: a view's parameters (which encoder layers), a newer parameter at its default (None)
        stored = {k: v for k, v in canonical_params(feature, self.params).items() if k not in spec.view_keys}
        self.config = {"feature": self.feature, "params": stored, "sample_rate": self.sr}
        if spec.identity is not None:  # what the name does not say (a model's content hash)
            self.config["identity"] = spec.identity(self.params)
        if spec.native_rate:  # entries hold features of the files' own rates
            self.config["native_rate"] = True
        self.speed = None  # the recordings as they are (no factor, or 1)
        if speed is not None and speed != 1:
            check_speed_factors([speed], "speed")  # refused here, not as an error on every file of a build
            self.speed = self.config["speed"] = float(speed)
        self.augment = augment
        if augment is not None:
            self.config["augment"] = augment.key()
        digest = hashlib.sha1(json.dumps(self.config, sort_keys=True, default=str).encode()).hexdigest()
        self.config_hash = digest[:12]
        self.root_dir = Path(cache_dir)
        self.dir = self.root_dir / f"{self.feature}-{self.config_hash}"

    # -- entries -------------------------------------------------------------------------
    def entry_path(self, root: str | os.PathLike, relpath: str) -> Path:
        """Where the features of ``root/relpath`` are stored (the file must exist)."""
        path = Path(root, relpath)
        path_hash = hashlib.sha1(str(path.resolve()).encode("utf-8")).hexdigest()[:20]
        return self.dir / path_hash[:2] / f"{path_hash}-{file_signature(path)}.npy"

    def get(self, root: str | os.PathLike, relpath: str) -> np.ndarray | None:
        """The cached features of ``root/relpath`` if a valid entry exists, else ``None``."""
        entry = self.entry_path(root, relpath)
        try:
            return self._view(np.load(entry, mmap_mode="r" if self.mmap else None, allow_pickle=False))
        except FileNotFoundError:
            return None

    def load(self, root: str | os.PathLike, relpath: str) -> np.ndarray:
        """Cached features of ``root/relpath``, computed and stored first when missing."""
        entry = self.entry_path(root, relpath)
        try:
            return self._view(np.load(entry, mmap_mode="r" if self.mmap else None, allow_pickle=False))
        except FileNotFoundError:
            feats, _ = self._compute_and_store(Path(root, relpath), entry)
            return self._view(feats)

    def compute(self, path: str | os.PathLike) -> np.ndarray:
        """Features of one file, not cached: ``(features, frames)`` float32."""
        return compute_feature_from_file(self.feature, path, self.sr, self.params, self.speed,
                                         transform=self.augment)[0]

    def _view(self, stored: np.ndarray) -> np.ndarray:
        return apply_view(self.spec, stored, self.params)

    def _compute_and_store(self, path: Path, entry: Path) -> tuple[np.ndarray, float]:
        """The feature's full output (before its view) for one file, stored as an entry."""
        feats, seconds = compute_feature_from_file(self.feature, path, self.sr, self.params, self.speed, view=False,
                                                   transform=self.augment)
        self._store(entry, feats)
        return feats, seconds

    def _store(self, entry: Path, feats: np.ndarray) -> None:
        self._ensure_config()
        atomic_save_npy(entry, feats)

    def _ensure_config(self) -> None:
        if not (self.dir / "config.json").exists():
            atomic_write_json(self.dir / "config.json", {**self.config, "emodet_version": __version__})

    # -- building ------------------------------------------------------------------------
    def build(self, root: str | os.PathLike, files: list[str] | None = None, *, workers: int = 1,
              on_error: str = "skip", shard: str | tuple[int, int] | None = None, progress: bool | None = None,
              plugins: Iterable[str] = ()) -> BuildReport:
        """Compute every missing entry for ``files`` (default: all audio under ``root``).

        Bad files are skipped and listed in the report (``on_error="skip"``) or stop the
        build with ``AudioError`` (``"raise"``). ``shard="i/n"`` builds one of ``n``
        disjoint parts. Returns the report, also written to ``<dir>/report.json``.
        """
        if on_error not in ("skip", "raise"):
            raise UsageError(f"--on-error {on_error!r}: valid values are skip, raise")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise UsageError(f"--workers must be a positive integer, got {workers!r}")
        root = Path(root)
        shard_t = parse_shard(shard)
        start = time.perf_counter()
        if files is None:
            files = list_audio_files(root, exclude=[self.root_dir])
        files = [f for f in files if in_shard(f, shard_t)]
        report = BuildReport(self.feature, self.params, self.sr, str(self.dir), total=len(files),
                             shard=None if shard_t is None else f"{shard_t[0]}/{shard_t[1]}")
        self.dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(self.dir)
        self._ensure_config()
        existing = self._existing_entries()

        todo = []
        for rel in files:
            try:
                entry = self.entry_path(root, rel)
            except OSError as exc:
                self._record_failure(report, rel, f"cannot read file ({exc.strerror or exc})", on_error)
                continue
            stale = existing.get(entry.name.split("-")[0], set()) - {entry.name}
            for name in stale:  # older versions of a touched file
                _unlink_quietly(entry.parent / name)
            if entry.name in existing.get(entry.name.split("-")[0], ()):
                report.cached += 1
            else:
                todo.append((rel, str(entry)))

        bar = progress_bar(len(todo), f"features {self.feature}", progress, unit="file")
        try:
            for rel, outcome in self._run(root, todo, workers, plugins):
                bar.update(1)
                if isinstance(outcome, float):
                    report.computed += 1
                    report.audio_seconds += outcome
                else:
                    self._record_failure(report, rel, outcome, on_error)
        finally:
            bar.close()
            report.wall_seconds = time.perf_counter() - start
            name = "report.json" if shard_t is None else f"report-shard-{shard_t[0]}-of-{shard_t[1]}.json"
            atomic_write_json(self.dir / name, {**asdict(report), "x_realtime": report.x_realtime,
                                                "emodet_version": __version__})
        return report

    def _existing_entries(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for bucket in os.scandir(self.dir):
            if bucket.is_dir():
                for item in os.scandir(bucket.path):
                    if item.name.endswith(".npy"):
                        found.setdefault(item.name.split("-")[0], set()).add(item.name)
        return found

    @staticmethod
    def _record_failure(report: BuildReport, rel: str, error: str, on_error: str) -> None:
        report.failed.append({"path": rel, "error": error})
        if on_error == "raise":
            raise AudioError(error if error.startswith(rel) else f"{rel}: {error}")

    def _run(self, root: Path, todo: list[tuple[str, str]], workers: int, plugins: Iterable[str]):
        """Yield ``(relpath, seconds of audio or error message)`` for each item of ``todo``."""
        if self.spec.batch_fn is not None and workers == 1:  # an encoder: batches, every thread
            yield from self._run_batches(root, todo)
            return
        if workers == 1 or len(todo) < 2:
            with single_thread():
                for rel, entry in todo:
                    yield rel, _build_one(self, root, rel, entry)
            return
        chunks = [todo[i::workers * 4] for i in range(workers * 4)]
        ctx = get_context("spawn")  # fork after torch has started threads can deadlock
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=init_worker, initargs=(list(plugins),)) as pool:
            futures = [pool.submit(_build_chunk, self.root_dir, self.feature, self.params, self.sr, self.speed, self.augment,
                                   str(root),
                                   chunk)
                       for chunk in chunks if chunk]
            for fut in futures:
                yield from fut.result()


    def _run_batches(self, root: Path, todo: list[tuple[str, str]], batch_seconds: float = 64.0):
        """Length-sorted batches of up to ``batch_seconds`` of audio through the feature's ``batch_fn``
        (a file that cannot be read is reported alone; the others still go through)."""
        from ..core.audio import load_audio_with_rate, speed_perturb

        order = sorted(todo, key=lambda item: os.stat(root / item[0]).st_size)
        pending: list[tuple[str, str, np.ndarray]] = []
        rate = None if self.spec.native_rate else self.sr

        def flush():
            wavs = [w for _, _, w in pending]
            try:
                outputs = self.spec.batch_fn(wavs, self.sr, self.params)
            except EmodetError as exc:
                outputs = [f"{root / rel}: {exc}" for rel, _, _ in pending]
            for (rel, entry, wav), out in zip(pending, outputs):
                if isinstance(out, str):
                    yield rel, out
                    continue
                self._store(Path(entry), check_feature_output(self.feature, out))
                yield rel, len(wav) / self.sr
            pending.clear()

        for rel, entry in order:
            try:
                wav, sr = load_audio_with_rate(root / rel, rate)
            except AudioError as exc:
                yield rel, str(exc)
                continue
            if self.speed is not None:
                wav = speed_perturb(wav, sr, self.speed)
            if self.augment is not None:
                wav = self.augment(wav, sr, str((root / rel).resolve()))
            pending.append((rel, entry, wav))
            if sum(len(w) for _, _, w in pending) >= batch_seconds * self.sr:
                yield from flush()
        if pending:
            yield from flush()


def _build_one(cache: FeatureCache, root: Path, rel: str, entry: str) -> float | str:
    try:
        _, seconds = cache._compute_and_store(root / rel, Path(entry))
        return seconds
    except AudioError as exc:
        return str(exc)
    except EmodetError as exc:  # a feature refusing this input (e.g. a plugin's check)
        return f"{root / rel}: {exc}"
    except MemoryError:
        return f"{root / rel}: out of memory computing features"


def _build_chunk(cache_root, feature, params, sr, speed, augment, root, chunk):
    cache = FeatureCache(cache_root, feature, params, sr, speed=speed, augment=augment)
    return [(rel, _build_one(cache, Path(root), rel, entry)) for rel, entry in chunk]


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
