"""What every ``emodet`` command shares: the parser class, argument builders, output and logging set-up."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import warnings

from ..core.errors import UsageError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class Parser(argparse.ArgumentParser):
    """argparse with our exit code for usage errors, and examples kept as written in the epilog."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def examples(*lines: str) -> str:
    """An epilog of example command lines."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (per-epoch and summary lines are still printed, e.g. for CI logs)")


def progress_of(args) -> bool | None:
    """``False`` with --no-progress, else ``None`` (bars only on a terminal)."""
    return False if getattr(args, "no_progress", False) else None


def add_config_args(p: argparse.ArgumentParser, config_required: bool = True) -> None:
    """The flags that name an experiment (train and cv share them)."""
    p.add_argument("--config", required=config_required, metavar="FILE",
                   help="experiment YAML (see configs/); sections data, features, model, training")
    p.add_argument("--run-name", required=True, metavar="NAME", help="name of the run directory under --runs-dir")
    p.add_argument("--data-root", metavar="DIR", help="corpus folder (sets data.root)")
    p.add_argument("--set", action="append", metavar="KEY.SUB=VALUE", dest="overrides",
                   help="override one config key, e.g. --set training.epochs=3 (repeatable; values read as YAML)")
    p.add_argument("--runs-dir", default="runs", metavar="DIR", help="folder of run directories (default: runs)")
    add_progress(p)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def fraction_or_count(text: str) -> float | int:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a fraction below 1 or a number of speakers") from None
    return int(value) if value >= 1 and value == int(value) else value


def require(args, *flags: str) -> None:
    """A UsageError naming the flags among ``flags`` (``--data-root`` style) that were not given."""
    missing = [f for f in flags if not getattr(args, f.lstrip("-").replace("-", "_"), None)]
    if missing:
        raise UsageError(f"emodet {args.command} needs {' and '.join(missing)}")


def figures(m: dict) -> str:
    """``UAR 0.812  WA 0.800  macro-F1 0.790`` of a metrics dict."""
    return f"UAR {m['uar']:.3f}  WA {m['wa']:.3f}  macro-F1 {m['macro_f1']:.3f}"


@contextlib.contextmanager
def console():
    """Library logs (``emodet.*``, INFO and up) as plain lines on stdout, warnings as one ``emodet: warning:``
    line each on stderr, a message said once a command (a cross-validation's folds would each repeat it);
    both restored afterwards (``main`` may be called in-process, e.g. by tests)."""
    logger = logging.getLogger("emodet")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    saved_level, saved_show, saved_propagate = logger.level, warnings.showwarning, logger.propagate
    said = set()

    def show(message, category, filename, lineno, file=None, line=None):
        if str(message) not in said:
            said.add(str(message))
            print(f"emodet: warning: {message}", file=sys.stderr)

    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # printed once, here, whatever handlers other libraries gave the root logger
    warnings.showwarning = show
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")  # every run of a command shows its warnings
            warnings.showwarning = show
            yield
    finally:
        handler.flush()
        logger.removeHandler(handler)
        logger.setLevel(saved_level)
        logger.propagate = saved_propagate
        warnings.showwarning = saved_show
