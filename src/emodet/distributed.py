"""Distributed training helpers (filled in by the scale-out work); single process returns None."""

from __future__ import annotations

import os


def maybe_init_distributed(cfg: dict):
    """``None`` unless launched by torchrun with more than one process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from .errors import UsageError

    raise UsageError("distributed training (torchrun with WORLD_SIZE > 1) is not available in this version")
