"""``emodet predict MODEL --mic``: a line a hop from the microphone, the time in each label at Ctrl-C."""

from __future__ import annotations

import json
import sys

from ..core.errors import UsageError
from .common import EXIT_OK

BAR_WIDTH = 10


def predict_live(args, build_predictor) -> int:
    """``emodet predict MODEL --mic``: a line a hop from the microphone, a summary at Ctrl-C (``build_predictor(args)``
    makes the predictor of MODEL and its flags)."""
    from ..runtime import sources
    from ..runtime.live import check_live_options

    if args.files:
        raise UsageError("--mic listens to the microphone: give FILE... or --mic, not both")
    if args.csv:
        raise UsageError("--csv goes with files; with --mic, --json prints one JSON object a line")
    window, hop = args.window or 2.0, args.hop or 0.5
    check_live_options(window, min(hop, window), args.min_confidence)
    if hop > window:
        raise UsageError(f"--hop ({hop:g} s) must not be longer than --window ({window:g} s) with --mic")
    predictor = build_predictor(args)
    if predictor.needs_calibration:
        raise UsageError(f"{args.model} normalises per {'speaker' if predictor.needs == 'calibrate' else 'domain'}: "
                         f"give --{'calibrate' if predictor.needs == 'calibrate' else 'adapt'} with a few recordings "
                         "of the speaker (or domain) to use it with --mic")
    source = sources.MicrophoneSource(args.device)
    return follow_live(predictor, source, window, hop, args.min_confidence, args.json)


def follow_live(predictor, source, window: float, hop: float, min_confidence: float = 0.0, as_json: bool = False) -> int:
    """Print a prediction every hop from ``source`` until it ends or Ctrl-C, then the time spent in each label."""
    from ..runtime.live import LiveWindows

    live = LiveWindows(predictor, window, hop, source.sr, min_confidence)
    show = (lambda p: print(json.dumps(p), flush=True)) if as_json else (lambda p: print(live_line(p), flush=True))
    print(f"listening: a line every {hop:g} s over {window:g} s windows; Ctrl-C ends", file=sys.stderr)
    try:
        with source:
            for chunk in source.chunks():
                live.push(chunk)
                for w in live.due():
                    show(live.predict(w))
            for w in live.finish():  # a source that ends (a file): its trailing windows too
                show(live.predict(w))
    except KeyboardInterrupt:
        pass
    summary = live.summary()
    summary["dropped_s"] = round(summary["dropped_s"] + source.dropped_s, 3)
    print(json.dumps({"summary": summary}) if as_json else summary_line(summary), flush=True)
    return EXIT_OK


def live_line(p: dict) -> str:
    """``   6.5 s  happy       0.82 ████████··  (window: happy 0.85)``."""
    cur = p["current"]
    top = max(p["probabilities"].values())
    return f"{p['end']:7.1f} s  {cur['label']:<10} {cur['confidence']:4.2f} {bar(cur['confidence'])}  " \
           f"(window: {p['label']} {top:.2f})"


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    full, empty = ("█", "·") if can_print("█·") else ("#", ".")
    n = int(round(max(0.0, min(1.0, fraction)) * width))
    return full * n + empty * (width - n)


def can_print(text: str) -> bool:
    try:
        text.encode(getattr(sys.stdout, "encoding", None) or "utf-8")
        return True
    except (UnicodeEncodeError, LookupError):
        return False


def summary_line(summary: dict) -> str:
    """``listened 42.0 s: happy 20.5 s (49%), neutral 15.0 s (36%)``."""
    total = sum(summary["labels"].values()) or 1.0
    held = ", ".join(f"{lab} {s:.1f} s ({s / total:.0%})" for lab, s in summary["labels"].items()) or "no full window"
    dropped = f"; {summary['dropped_s']:.1f} s of audio dropped (the machine fell behind)" if summary["dropped_s"] else ""
    return f"listened {summary['seconds']:.1f} s: {held}{dropped}"
