"""Progress bars (tqdm) shown on a terminal, hidden when asked or on non-main DDP ranks."""

from __future__ import annotations


def bar_disabled(progress: bool | None, is_main: bool = True) -> bool | None:
    """tqdm's ``disable``: ``None`` (show only on a terminal) for ``progress=None``, else as asked."""
    if not is_main or progress is False:
        return True
    return None if progress is None else False


def progress_bar(total: int | None, desc: str, progress: bool | None, unit: str = "it", is_main: bool = True):
    """A tqdm bar that leaves no line behind when done."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, mininterval=0.5,
                disable=bar_disabled(progress, is_main))
