"""The ``emodet`` command line: parse arguments, call one library function, print; errors become exit codes.

Exit codes: 0 success; 1 the job failed or finished with some inputs failed (each listed in
its report); 2 a usage or configuration error. One module a group of commands (``data``,
``train``, ``deploy``); each command is an ``add_<name>`` (its flags and help) and a ``cmd_<name>``.
"""

from __future__ import annotations

import sys

from .. import __version__
from ..core.errors import EmodetError
from . import data, deploy, encoders, report, serve, train
from .common import EXIT_OK, EXIT_USAGE, Parser, console


def build_parser() -> Parser:
    parser = Parser(prog="emodet", description="Speech emotion recognition: from a folder of recordings to an honest, "
                                               "speaker-independent figure and a model for other people's recordings.")
    parser.add_argument("--version", action="version", version=f"emodet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    train.add_demo(sub)
    p = sub.add_parser("data", help="corpora: synthesise, prepare manifests, re-split")
    p.set_defaults(help_of=p)
    data_sub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND", parser_class=Parser)
    data.add_synth(data_sub)
    data.add_prepare(data_sub)
    data.add_split(data_sub)
    data.add_features(sub)
    encoders.add_encoders(sub)
    train.add_train(sub)
    train.add_evaluate(sub)
    train.add_calibrate(sub)
    train.add_cv(sub)
    train.add_ensemble(sub)
    report.add_report(sub)
    deploy.add_export(sub)
    deploy.add_predict(sub)
    serve.add_serve(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.set_defaults(help_of=parser)
    args, extra = parser.parse_known_args(argv)
    if extra:  # files after an option that takes one value (predict m.onnx --calibrate a.wav b.wav): more files
        if isinstance(getattr(args, "files", None), list) and not any(e.startswith("-") for e in extra):
            args.files.extend(extra)
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):  # `emodet` or `emodet data` alone: the help of what was given
        args.help_of.print_help()
        return EXIT_USAGE
    with console():
        try:
            return args.func(args)
        except EmodetError as exc:
            print(f"emodet: error: {exc}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:
            hint = getattr(args, "interrupt_hint", None)
            print("emodet: interrupted" + (f"; {hint}" if hint else ""), file=sys.stderr)
            return 130
        except BrokenPipeError:  # output piped into `head` and the like
            sys.stderr.close()
            return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
