"""``emodet report``: one self-contained HTML page for a run, a cross-validation, an ensemble or a benchmark;
and the report ``emodet train`` and ``emodet cv`` write when they finish."""

from __future__ import annotations

import warnings
from pathlib import Path

from .common import EXIT_OK, examples


def add_report(sub) -> None:
    p = sub.add_parser(
        "report", help="one self-contained HTML page for a run, cross-validation, ensemble or benchmark",
        description="Write one HTML file holding everything (figures, styles and audio inline; no URL, so it opens "
                    "from disk with no network and prints to PDF from the browser): what was run (config, data by "
                    "split and label, normalisation and what it needs at deployment, time, size), the figures with "
                    "95% intervals from a bootstrap over speakers, per-class figures, the confusion matrix, UAR of "
                    "each speaker, learning curves, calibration, and the most confidently misclassified recordings "
                    "with players. `emodet train` and `emodet cv` write one at the end (report.html). An ensemble "
                    "not yet evaluated is evaluated on its members' test split first (eval_test.json, as `emodet "
                    "evaluate` writes it).",
        epilog=examples("emodet report runs/cnn_v1                         # -> runs/cnn_v1/report.html",
                        "emodet report runs/cnn_cv --compare runs/fc_cv runs/lin_cv --out compare.html",
                        "emodet report runs/abc --audio link               # an ensemble; players link the recordings",
                        "emodet report runs/bench_cross_corpus/cross_corpus.json    # a benchmark's table"))
    p.add_argument("path", metavar="DIR", help="a run (emodet train), cross-validation (emodet cv) or ensemble "
                   "(emodet ensemble) directory, or a benchmark's JSON (bench/accuracy.py --json, "
                   "bench/cross_corpus.py) or its folder")
    p.add_argument("--out", metavar="HTML", help="where to write the page (default: report.html in DIR; for a "
                   "benchmark's JSON, the same name ending .html)")
    p.add_argument("--compare", nargs="+", default=[], metavar="DIR2", help="more runs, cross-validations or "
                   "ensembles to show beside DIR in one table (figures with intervals, recall of each label)")
    p.add_argument("--audio", choices=("embed", "link", "none"), default="embed",
                   help="the worst mistakes' recordings: embed them in the page (default; at most 8, the first 6 s "
                        "of each), link them (paths relative to the page: keep the data where it is) or none")
    p.add_argument("--seed", type=int, default=0, help="seed of the speaker bootstrap behind the intervals (default: 0)")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from ..evaluation.report import write_report

    out = write_report(args.path, args.out, args.compare, args.audio, seed=args.seed)
    print(f"report -> {out}")
    return EXIT_OK


def add_no_report(p) -> None:
    """``--no-report`` for the commands that write a report when they finish."""
    p.add_argument("--no-report", action="store_true", help="do not write report.html at the end (it can be "
                   "written later with `emodet report DIR`)")


def report_or_warn(path: str | Path, args) -> None:
    """The report of a finished job, unless --no-report; one that fails to build is a warning, never a failed job."""
    if getattr(args, "no_report", False):
        return
    from ..evaluation.report import write_report

    try:
        print(f"report -> {write_report(path)}")
    except Exception as exc:  # the job succeeded; its report is a convenience
        warnings.warn(f"the report of {path} was not written ({type(exc).__name__}: {exc}); "
                      f"try again with: emodet report {path}", stacklevel=2)
