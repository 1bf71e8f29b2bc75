"""Atomic writes: write a temporary file in the target's folder, then ``os.replace`` it.

A reader sees the old file or the new one, never half of one, even when the writer is
killed with SIGKILL. Temporary names carry the writer's pid so a later run can remove the
leftovers of dead writers without touching those of live ones (``remove_stale_temp_files``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np

TMP_SUFFIX = ".tmp"


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs) -> Iterator[io.IOBase]:
    """Open a temporary file beside ``path``; on a clean exit it replaces ``path`` atomically."""
    path = Path(path)
    _ensure_folder(path.parent)
    tmp = _temp_name(path)
    try:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


_KNOWN_FOLDERS: set[str] = set()


def _ensure_folder(folder: Path) -> None:
    # A cache build writes thousands of entries into a few hundred folders: mkdir each once.
    key = str(folder)
    if key not in _KNOWN_FOLDERS or not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        _KNOWN_FOLDERS.add(key)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_open(path, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def atomic_write_csv(path: str | os.PathLike, rows: list[dict], fieldnames: list[str]) -> None:
    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fieldnames, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def remove_stale_temp_files(folder: str | os.PathLike) -> int:
    """Delete temporary files under ``folder`` whose writer process is gone; returns how many."""
    removed = 0
    for dirpath, _, names in os.walk(folder):
        for name in names:
            if not (name.startswith(".") and name.endswith(TMP_SUFFIX)):
                continue
            parts = name[: -len(TMP_SUFFIX)].rsplit(".", 2)
            pid = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None
            if pid is None or not _pid_alive(pid):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(dirpath, name))
                    removed += 1
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")
