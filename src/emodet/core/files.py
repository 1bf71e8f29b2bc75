"""Finding audio files under a folder (torch-free: the corpus parsers and the cache share it)."""

from __future__ import annotations

import glob
import os
from collections import Counter
from pathlib import Path
from typing import Iterable

from .audio import is_audio_file
from .errors import UsageError


def list_audio_files(root: str | os.PathLike, exclude: Iterable[str | os.PathLike] = ()) -> list[str]:
    """Audio files under ``root`` as sorted POSIX paths relative to it (hidden files and folders skipped)."""
    return scan_folder(root, exclude)[0]


def scan_folder(root: str | os.PathLike, exclude: Iterable[str | os.PathLike] = ()) -> tuple[list[str], Counter]:
    """``(audio files, Counter of the other files' extensions)`` under ``root``, recursively.

    Audio files are sorted POSIX paths relative to ``root``; hidden files and folders and the
    folders in ``exclude`` (e.g. a cache inside the corpus) are skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"--data-root {root}: not a folder")
    excluded = {Path(p).resolve() for p in exclude}
    found, others = [], Counter()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and Path(dirpath, d).resolve() not in excluded)
        for name in filenames:
            if name.startswith("."):
                continue
            if is_audio_file(name):
                found.append(Path(dirpath, name).relative_to(root).as_posix())
            else:
                others[Path(name).suffix.lower() or "(no extension)"] += 1
    return sorted(found), others


def expand_inputs(items: list[str], flag: str = "FILE", missing_ok: bool = True) -> list[str]:
    """Files as given; folders as every audio file under them (sorted); quoted globs expanded; ``-`` kept. A path
    that does not exist is kept (a batch reports it with the others) unless ``missing_ok`` is false."""
    out = []
    for item in items:
        if not str(item).strip():  # Path("") is the current folder: an empty shell variable would predict all of it
            raise UsageError(f"{flag} {item!r}: an empty path; give a file or folder")
        if item == "-":
            out.append(item)
        elif Path(item).is_dir():
            found = list_audio_files(item)
            if not found:
                raise UsageError(f"{flag} {item}: a folder with no audio files")
            out += [str(Path(item) / rel) for rel in found]
        elif any(c in item for c in "*?[") and not Path(item).exists():
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise UsageError(f"{flag} {item!r}: the pattern matches no file")
            out += matches
        elif not missing_ok and not Path(item).exists():
            raise UsageError(f"{flag} {item}: no such file or folder")
        else:
            out.append(item)
    return out
