"""Plots a person reads: confusion matrices, learning curves, per-group bars, as PNG (matplotlib, no display)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.io import atomic_open


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
    _save(fig, path)


def plot_curves(history: list[dict], path: str | Path, title: str = "") -> None:
    """Training (and validation) loss, and validation UAR/WA, by epoch (whole-number ticks), as PNG;
    without a validation split, the loss panel alone."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in history]
    has_val = any(r["val_uar"] == r["val_uar"] for r in history)  # NaN without a validation split
    fig, axes = plt.subplots(1, 2 if has_val else 1, figsize=(10 if has_val else 5.5, 3.6), squeeze=False)
    a = axes[0][0]
    a.plot(epochs, [r["train_loss"] for r in history], label="train loss")
    if has_val:
        a.plot(epochs, [r["val_loss"] for r in history], label="val loss")
        b = axes[0][1]
        b.plot(epochs, [r["val_uar"] for r in history], label="val UAR")
        b.plot(epochs, [r["val_wa"] for r in history], label="val WA")
        b.set_ylim(0, 1)
        b.set_ylabel("validation score (0-1)")
    for ax in axes[0]:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
    a.set_ylabel("loss (cross-entropy, nats)")
    fig.suptitle(title + ("" if has_val else " (no validation split)"))
    _save(fig, path)


def plot_group_bars(values: dict[str, float], path: str | Path, xlabel: str, ylabel: str, title: str = "",
                    chance: float | None = None) -> None:
    """One bar a group (e.g. UAR of each held-out speaker), their mean as a line, chance dashed."""
    plt = _plt()
    names, heights = list(values), [values[k] for k in values]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.35 * len(names) + 2), 3.6))
    ax.bar(range(len(names)), heights, color="#4c72b0")
    ax.set_xticks(range(len(names)), names, rotation=60 if len(names) > 8 else 0, ha="right" if len(names) > 8 else "center")
    if heights:
        ax.axhline(float(np.mean(heights)), color="black", lw=1, label=f"mean {np.mean(heights):.3f}")
    if chance is not None:
        ax.axhline(chance, color="gray", ls="--", lw=1, label=f"chance {chance:.2f}")
    ax.set_ylim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(loc="lower right")
    ax.set_title(title, fontsize=9)
    _save(fig, path)


def plot_reliability(calibration: dict, path: str | Path, title: str = "") -> None:
    """Reliability diagram (accuracy against confidence, before and after temperature scaling) and the
    coverage/accuracy trade-off of abstaining below a confidence."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot([0, 1], [0, 1], color="gray", ls="--", lw=1, label="perfectly calibrated")
    for key, name in (("reliability_before", "softmax"), ("reliability_after", f"T = {calibration['temperature']:.2f}")):
        r = calibration[key]
        used = [i for i, c in enumerate(r["count"]) if c]
        label = f"{name} (ECE {calibration['ece_' + key.split('_')[1]]:.3f})"
        a.plot([r["confidence"][i] for i in used], [r["accuracy"][i] for i in used], marker="o", label=label)
    a.set_xlabel("confidence (top probability, 0-1)")
    a.set_ylabel("accuracy in the bin (0-1)")
    a.set_xlim(0, 1)
    a.set_ylim(0, 1)
    a.legend(loc="upper left", fontsize=8)
    curve = [c for c in calibration["coverage"] if c["coverage"] > 0]
    b.plot([c["coverage"] for c in curve], [c["accuracy"] for c in curve], marker=".")
    b.set_xlabel("coverage (share of recordings answered, 0-1)")
    b.set_ylabel("accuracy of the answered (0-1)")
    b.set_xlim(0, 1.02)
    b.set_ylim(0, 1.02)
    b.set_title("abstaining below a confidence", fontsize=9)
    fig.suptitle(title)
    _save(fig, path)


def _save(fig, path) -> None:
    """PNG written atomically to a path; SVG (no metadata) into a text stream, which the HTML report inlines."""
    plt = _plt()
    fig.tight_layout()
    if hasattr(path, "write"):
        fig.savefig(path, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    else:
        with atomic_open(path, "wb") as fh:
            fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
