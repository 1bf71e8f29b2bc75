"""Reports a person reads: confusion-matrix and learning-curve PNGs (matplotlib, no display)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import atomic_open


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(cm, labels: list[str], path: str | Path, title: str = "") -> None:
    """Row-normalised confusion matrix with counts, written atomically as PNG."""
    plt = _plt()
    cm = np.asarray(cm, dtype=float)
    rates = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = 1.2 + 0.7 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center",
                    color="white" if rates[i, j] > 0.5 else "black", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046, label="recall share")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)


def plot_curves(history: list[dict], path: str | Path, title: str = "") -> None:
    """Training and validation loss, validation UAR/WA by epoch, as PNG."""
    plt = _plt()
    epochs = [r["epoch"] for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(epochs, [r["train_loss"] for r in history], label="train loss")
    a.plot(epochs, [r["val_loss"] for r in history], label="val loss")
    a.set_xlabel("epoch")
    a.legend()
    b.plot(epochs, [r["val_uar"] for r in history], label="val UAR")
    b.plot(epochs, [r["val_wa"] for r in history], label="val WA")
    b.set_xlabel("epoch")
    b.set_ylim(0, 1)
    b.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
