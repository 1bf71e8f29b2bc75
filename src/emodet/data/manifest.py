"""Manifests: one CSV row a recording (``path,label,speaker,corpus,duration_s,split,...``).

Paths are POSIX and relative to the data root (``data.root`` in a config, ``--data-root`` on
the command line); absolute paths are used as they are. A manifest with no data root
resolves its paths against its own folder.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from ..core.errors import UsageError
from ..core.io import atomic_write_csv

CORE_COLUMNS = ["path", "label", "speaker", "corpus", "duration_s", "split"]
FOLD_COLUMNS = ["fold", "loso_fold"]
REQUIRED_COLUMNS = ("path", "label", "speaker")
SPLITS = ("train", "val", "test")


def write_manifest(path: str | os.PathLike, rows: list[dict], moved_from: str | os.PathLike | None = None) -> None:
    """Write ``rows`` atomically; core columns first, then fold columns, then the rest sorted.

    ``moved_from``: the manifest the rows' relative paths are relative to (one read without a data root);
    they are rewritten relative to the new manifest's folder, so they still name the same files."""
    if moved_from is not None:
        rows = rebase_rows(rows, moved_from, path)
    extra = sorted({k for r in rows for k in r} - set(CORE_COLUMNS) - set(FOLD_COLUMNS))
    present = [c for c in FOLD_COLUMNS if any(c in r for r in rows)]
    atomic_write_csv(path, rows, CORE_COLUMNS + present + extra)


def rebase_rows(rows: list[dict], old_manifest: str | os.PathLike, new_manifest: str | os.PathLike) -> list[dict]:
    """Rows whose relative paths (relative to ``old_manifest``'s folder) are rewritten relative to
    ``new_manifest``'s folder; absolute paths stay as they are."""
    old, new = Path(old_manifest).parent.resolve(), Path(new_manifest).parent.resolve()
    if old == new:
        return rows
    return [r if Path(r["path"]).is_absolute() else
            {**r, "path": Path(os.path.relpath((old / r["path"]).resolve(), new)).as_posix()} for r in rows]


def read_manifest(path: str | os.PathLike, check_split: bool = True) -> list[dict]:
    """Rows of a manifest as dicts of strings; checks the required columns and (``check_split``) that the
    split column is valid and speaker-independent."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"manifest {path}: file not found")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"manifest {path}: not a readable CSV file ({exc})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise UsageError(f"manifest {path}: missing column(s) {', '.join(missing)}; "
                         f"a manifest needs {', '.join(REQUIRED_COLUMNS)} (found: {', '.join(columns) or 'none'})")
    for i, row in enumerate(rows, start=2):
        for col in REQUIRED_COLUMNS:
            if not (row.get(col) or "").strip():
                raise UsageError(f"manifest {path}, line {i}: empty {col!r}")
        split = (row.get("split") or "").strip()
        if check_split and split and split not in SPLITS:
            raise UsageError(f"manifest {path}, line {i}: split {split!r} is not one of {', '.join(SPLITS)}")
    if check_split:
        check_speaker_independent(rows, source=str(path))
    return rows


def read_manifest_unsplit(path: str | os.PathLike) -> list[dict]:
    """A manifest read to be re-split: its old split column may be anything."""
    return read_manifest(path, check_split=False)


def check_speaker_independent(rows: list[dict], source: str = "manifest") -> None:
    """Refuse a split column that puts one speaker on two sides."""
    seen: dict[str, str] = {}
    for row in rows:
        split = (row.get("split") or "").strip()
        if not split:
            continue
        spk = row["speaker"]
        if seen.setdefault(spk, split) != split:
            raise UsageError(f"{source}: speaker {spk!r} is in both {seen[spk]!r} and {split!r}; "
                             "a speaker-independent split keeps each speaker on one side (re-split with `emodet data split`)")


def resolve_path(row_path: str, root: str | os.PathLike | None, manifest_path: str | os.PathLike | None = None) -> Path:
    """The file a manifest row names: absolute as is, else under ``root`` (or the manifest's folder)."""
    p = Path(row_path)
    if p.is_absolute():
        return p
    base = Path(root) if root is not None else (Path(manifest_path).parent if manifest_path else Path("."))
    return base / p


def rows_in_split(rows: list[dict], split: str) -> list[dict]:
    """Rows whose ``split`` is ``split``; refuses a manifest that has no split column filled."""
    if split not in SPLITS:
        raise UsageError(f"split {split!r}: valid splits are {', '.join(SPLITS)}")
    if not any(r.get("split") for r in rows):
        raise UsageError("the manifest has no split column; write one with `emodet data split` or `data prepare`")
    return [r for r in rows if r.get("split") == split]
