"""A cache build's bookkeeping (its report, shards of files) and its worker processes."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from ..core.errors import UsageError


def parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``."""
    if shard is None or isinstance(shard, tuple):
        return shard
    try:
        i, n = (int(part) for part in str(shard).split("/"))
    except ValueError:
        raise UsageError(f"--shard {shard!r}: expected i/n, e.g. 0/4 for the first of four shards") from None
    if not 0 <= i < n:
        raise UsageError(f"--shard {shard!r}: need 0 <= i < n (shards are numbered from 0)")
    return i, n


def in_shard(relpath: str, shard: tuple[int, int] | None) -> bool:
    """Whether ``relpath`` belongs to ``shard``; a stable hash, so adding files moves no others."""
    if shard is None:
        return True
    return zlib.crc32(relpath.encode("utf-8")) % shard[1] == shard[0]


@dataclass
class BuildReport:
    """Summary of one ``FeatureCache.build``; ``failed`` holds ``{"path", "error"}`` dicts."""

    feature: str
    params: dict
    sample_rate: int
    cache_dir: str
    total: int = 0
    computed: int = 0
    cached: int = 0
    failed: list = field(default_factory=list)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    shard: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def x_realtime(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else float("inf")

    def summary_line(self) -> str:
        rt = f", {self.x_realtime:,.0f}x real time" if self.computed else ""
        return (f"{self.feature}: {self.total} files, {self.computed} computed, {self.cached} already cached, "
                f"{len(self.failed)} failed in {self.wall_seconds:.2f} s{rt} -> {self.cache_dir}")


def init_worker(plugins: list[str]) -> None:
    import torch

    from ..features import load_plugins

    torch.set_num_threads(1)
    load_plugins(plugins)


class single_thread:
    """Run torch on one thread for many small transforms (faster, and fair to other processes)."""

    def __enter__(self):
        import torch

        self._threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self._threads)
