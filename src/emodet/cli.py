"""The ``emodet`` command line: parse arguments, call the library, turn errors into exit codes.

Exit codes: 0 success; 1 the job failed or finished with some inputs failed (each listed in
its report); 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

from . import __version__
from .errors import EmodetError, UsageError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse with our exit code for usage errors (argparse's own is also 2)."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def parse_params(items: list[str] | None, flag: str = "--param") -> dict:
    """``["n_mels=64", "fmax=8000"]`` -> ``{"n_mels": 64, "fmax": 8000}`` (values read as YAML scalars)."""
    params = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} {item!r}: expected key=value, e.g. {flag} n_mels=64")
        try:
            params[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            params[key.strip()] = value
    return params


# -- emodet features -------------------------------------------------------------------------
def _add_features_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", help="folder of audio files (searched recursively)")
    p.add_argument("--feature", default="logmel", help="registered feature name (default: logmel); --list shows them")
    p.add_argument("--cache-dir", help="folder of the feature cache")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="feature parameter (librosa's names), repeatable")
    p.add_argument("--sr", type=int, default=16000, help="sample rate audio is resampled to (default: 16000)")
    p.add_argument("--workers", type=int, default=1, help="processes computing features (default: 1)")
    p.add_argument("--on-error", choices=("skip", "raise"), default="skip",
                   help="skip bad files and report them (default) or stop at the first")
    p.add_argument("--shard", metavar="I/N", help="build only shard I of N (0-based), e.g. for several machines")
    p.add_argument("--plugin", action="append", metavar="MODULE_OR_FILE", help="import a module that registers features")
    p.add_argument("--list", action="store_true", help="list the registered features and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_features(args) -> int:
    from .data.cache import FeatureCache
    from .features import get_feature_spec, list_features, load_plugins

    load_plugins(args.plugin)
    if args.list:
        for name in list_features():
            spec = get_feature_spec(name)
            alias = f" (alias: {', '.join(spec.aliases)})" if spec.aliases else ""
            print(f"{name:10s} {spec.description}{alias}")
        return EXIT_OK
    missing = [flag for flag, value in (("--data-root", args.data_root), ("--cache-dir", args.cache_dir)) if not value]
    if missing:
        raise UsageError(f"emodet features needs {' and '.join(missing)}")
    cache = FeatureCache(args.cache_dir, args.feature, parse_params(args.param), sr=args.sr)
    report = cache.build(args.data_root, workers=args.workers, on_error=args.on_error, shard=args.shard,
                         progress=False if args.no_progress else None, plugins=args.plugin or ())
    print(report.summary_line())
    if report.failed:
        for item in report.failed[:10]:
            print(f"  failed: {item['error']}", file=sys.stderr)
        more = f" ({len(report.failed) - 10} more)" if len(report.failed) > 10 else ""
        report_name = "report.json" if report.shard is None else f"report-shard-{report.shard.replace('/', '-of-')}.json"
        print(f"  {len(report.failed)} file(s) failed{more}; all listed in {Path(report.cache_dir) / report_name}",
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


# -- emodet data synth -----------------------------------------------------------------------
def cmd_data_synth(args) -> int:
    from .data.synth import generate_corpus

    start = time.perf_counter()
    rows = generate_corpus(args.out, per_class=args.per_class, speakers=args.speakers, seed=args.seed)
    seconds = sum(r["duration_s"] for r in rows)
    labels = sorted({r["label"] for r in rows})
    print(f"synthetic corpus: {len(rows)} files, {args.speakers} speakers, {len(labels)} labels "
          f"({', '.join(labels)}), {seconds / 60:.1f} min of audio in {time.perf_counter() - start:.1f} s -> {args.out}")
    return EXIT_OK


# -- emodet demo -----------------------------------------------------------------------------
def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args.out, per_class=args.per_class, speakers=args.speakers, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="emodet", description="Speech emotion recognition: features, training, evaluation, export.")
    parser.add_argument("--version", action="version", version=f"emodet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("demo", help="the whole path on a built-in synthetic corpus (no download)")
    p.add_argument("--out", default="emodet-demo", help="folder for corpus, cache and runs (default: ./emodet-demo)")
    p.add_argument("--per-class", type=int, default=12, help="utterances per class and speaker (default: 12)")
    p.add_argument("--speakers", type=int, default=8, help="number of speakers (default: 8)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("data", help="corpora: synthesise, prepare manifests")
    data_sub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND", parser_class=_Parser)
    ps = data_sub.add_parser("synth", help="write a synthetic labelled corpus (folder per label)")
    ps.add_argument("--out", required=True, help="output folder")
    ps.add_argument("--per-class", type=int, default=12, help="utterances per class and speaker (default: 12)")
    ps.add_argument("--speakers", type=int, default=8, help="number of speakers (default: 8)")
    ps.add_argument("--seed", type=int, default=0)
    ps.set_defaults(func=cmd_data_synth)

    p = sub.add_parser("features", help="build a feature cache for a folder of audio")
    _add_features_args(p)
    p.set_defaults(func=cmd_features)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        (parser if args.command is None else parser._subparsers._group_actions[0].choices[args.command]).print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except EmodetError as exc:
        print(f"emodet: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("emodet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
