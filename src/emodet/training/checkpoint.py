"""Checkpoints: atomic writes, ``weights_only`` loading, and the RNG states exact resume needs."""

from __future__ import annotations

import pickle
import random
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..core.errors import UsageError
from ..core.io import atomic_open


def save_checkpoint(path: str | Path, state: dict) -> None:
    """``torch.save`` to a temporary file, then rename: never a half-written checkpoint."""
    with atomic_open(path, "wb") as fh:
        torch.save(state, fh)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load with ``weights_only=True``: tensors and plain containers only, never code.

    A checkpoint holding other objects (one crafted to run code when unpickled, or one saved
    by another tool) is refused with a clear message.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint {path}: file not found")
    if not zipfile.is_zipfile(path):
        raise UsageError(f"checkpoint {path}: not a readable checkpoint (not a torch.save file)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = next((line.strip() for line in str(exc).splitlines() if "Unsupported global" in line), "")
        raise UsageError(f"checkpoint {path}: refused, it holds objects other than tensors and plain data "
                         f"(weights_only loading; emodet never runs code from a checkpoint){': ' + detail if detail else ''}") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise UsageError(f"checkpoint {path}: not a readable checkpoint ({str(exc).splitlines()[0]})") from None


def rng_state() -> dict:
    """Python, numpy and torch RNG states as tensors and plain types (loadable with weights_only)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
