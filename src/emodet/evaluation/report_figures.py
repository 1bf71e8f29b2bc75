"""The HTML report's figures as inline SVG: the plots module's figures, offline and with ids unique in the page.

Each figure keeps its axis labels and units; the SVG carries no DOCTYPE, no namespaces (the HTML parser
knows SVG) and no metadata, so the page names no URL. ``key`` prefixes every id a figure defines and
references, and seeds matplotlib's id hashes, so the same figure always gives the same text.
"""

from __future__ import annotations

import io
import re
from typing import Callable

from .plots import _plt, _save


def inline_svg(key: str, draw: Callable, label: str) -> str:
    """``draw(stream)`` (one of the plot functions, given a text stream) as an ``<svg>`` element string."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": key, "svg.fonttype": "none", "font.size": 9}):
        draw(buf)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg)
    svg = re.sub(r'\bid="([^"]+)"', rf'id="{key}-\1"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", rf"url(#{key}-\1)", svg)
    svg = re.sub(r'href="#([^"]+)"', rf'href="#{key}-\1"', svg)
    label = label.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    return svg.replace("<svg ", f'<svg role="img" aria-label="{label}" ', 1)


def plot_fold_curves(histories: dict[str, list[dict]], stream, title: str = "", what: str = "folds") -> None:
    """Learning curves of several trainings (a cross-validation's folds, an ensemble's members): each one's
    training loss and validation UAR by epoch, thin, and their mean over those that reached an epoch, bold."""
    plt = _plt()
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    has_val = any(r["val_uar"] == r["val_uar"] for h in histories.values() for r in h)
    fig, axes = plt.subplots(1, 2 if has_val else 1, figsize=(10 if has_val else 5.5, 3.6), squeeze=False)
    panels = [("train_loss", "loss (cross-entropy, nats)", "training loss")]
    panels += [("val_uar", "validation UAR (0-1)", "validation UAR")] if has_val else []
    for ax, (key, ylabel, name) in zip(axes[0], panels):
        longest = max(len(h) for h in histories.values())
        for fold, h in histories.items():
            ax.plot([r["epoch"] for r in h], [r[key] for r in h], lw=0.8, alpha=0.45)
        mean = [np.nanmean([h[i][key] for h in histories.values() if len(h) > i]) for i in range(longest)]
        ax.plot(range(1, longest + 1), mean, color="black", lw=2, label=f"{name}, mean over {what}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.legend(loc="best", fontsize=8)
        if key == "val_uar":
            ax.set_ylim(0, 1)
    fig.suptitle(title + f" ({len(histories)} {what}, one thin line each)")
    _save(fig, stream)


def curves_svg(ev) -> str | None:
    """Learning curves of a run, of every fold of a cross-validation, or of every member of an ensemble."""
    from .plots import plot_curves
    from .report_parts import read_csv

    histories = {r.name: [{k: _number(v) for k, v in row.items()} for row in read_csv(r / "history.csv")]
                 for r in ev.runs if (r / "history.csv").is_file()}
    histories = {k: h for k, h in histories.items() if h}
    if not histories:
        return None
    if ev.kind == "run":
        return inline_svg("curves", lambda out: plot_curves(next(iter(histories.values())), out, ev.name),
                          "learning curves: loss and validation scores by epoch")
    what = "folds" if ev.kind == "cv" else "members"
    return inline_svg("curves", lambda out: plot_fold_curves(histories, out, ev.name, what),
                      f"learning curves of the {what}: loss and validation UAR by epoch")


def speakers_svg(per_speaker: dict[str, float], n_labels: int, what: str) -> str:
    from .plots import plot_group_bars

    chance = 1 / n_labels
    return inline_svg("speakers", lambda out: plot_group_bars(
        per_speaker, out, f"speaker ({what})", "UAR (0-1)", f"UAR of each speaker (chance {chance:.2f})", chance=chance),
        "UAR of each speaker, with their mean and chance")


def reliability_svg(calibration: dict, title: str) -> str:
    from .plots import plot_reliability

    return inline_svg("reliability", lambda out: plot_reliability(calibration, out, title),
                      "reliability diagram and the coverage/accuracy curve of abstaining")


def _number(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")
