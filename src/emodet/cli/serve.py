"""``emodet serve``: a model served over HTTP and WebSocket, with its page (see ``emodet.serve``)."""

from __future__ import annotations

import os
import socket

from ..core.errors import UsageError
from .common import EXIT_OK, examples, positive_float
from ..core.files import expand_inputs
from .deploy import add_model_args, build_predictor


# -- emodet serve ----------------------------------------------------------------------------
def add_serve(sub) -> None:
    p = sub.add_parser(
        "serve", help="serve a model over HTTP and WebSocket, with a page for the microphone (no torch)",
        description="Serve an exported model: POST /predict (uploads), WS /stream (live 16 kHz PCM), GET /model, "
                    "GET /health and, at /, a page that records the microphone or takes dropped files. Binds "
                    "127.0.0.1; any other address needs --token (clients send 'Authorization: Bearer T', a browser "
                    "opens /?token=T once). Needs pip install 'emodet[serve]'.",
        epilog=examples("emodet serve model.onnx                     # http://127.0.0.1:8000/",
                        "emodet serve cnn.onnx --fuse lin.onnx --calibrate speaker_clips/",
                        "emodet serve model.onnx --host 0.0.0.0 --token \"$(openssl rand -hex 16)\" --workers 2",
                        "curl -F file=@clip.wav 'http://127.0.0.1:8000/predict?window=2&hop=0.5'"))
    p.add_argument("model", metavar="MODEL.onnx", help="a model written by emodet export")
    add_model_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--token", default=os.environ.get("EMODET_TOKEN"), metavar="T",
                   help="bearer token every route but /health requires (default: $EMODET_TOKEN; required to bind "
                        "an address other than 127.0.0.1)")
    p.add_argument("--max-upload-mb", type=positive_float, default=50.0, metavar="MB",
                   help="largest upload accepted, refused from its Content-Length or as it streams (default: 50)")
    p.add_argument("--max-seconds", type=positive_float, default=600.0, metavar="S",
                   help="longest recording accepted, from its header where it has one (default: 600)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="server processes, each with the model loaded (default: 1)")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    from ..serve import SERVE_INSTALL_HINT, missing_dependencies

    missing = missing_dependencies()
    if missing:
        raise UsageError(f"emodet serve needs {', '.join(missing)}: {SERVE_INSTALL_HINT}")
    from ..serve.app import ServeSettings
    from ..serve.security import LOOPBACK_HOSTS, is_loopback
    from ..serve.server import run_server

    check_serve_args(args)
    loopback = is_loopback(args.host)
    predictor = build_predictor(args)
    settings = ServeSettings(args.token, args.max_upload_mb, args.max_seconds, LOOPBACK_HOSTS if loopback else None)
    spec = {"models": [args.model, *args.fuse], "weights": args.weights,
            "calibrate": expand_inputs(args.calibrate, "--calibrate", False),
            "adapt": expand_inputs(args.adapt, "--adapt", False)}
    where = f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}/"
    print(f"serving {args.model} ({', '.join(predictor.labels)}) on {where}"
          + (" (token required: a browser opens /?token=...)" if args.token else "") + "; Ctrl-C stops")
    if predictor.needs_calibration:
        print(f"{args.model} needs per-{'speaker' if predictor.needs == 'calibrate' else 'domain'} statistics: "
              "/stream calibrates each stream (the page does), /predict answers 409 for short recordings")
    run_server(predictor, spec, settings, args.host, args.port, args.workers, args.access_log)
    return EXIT_OK


def check_serve_args(args) -> None:
    from ..serve.security import is_loopback

    if not is_loopback(args.host) and not args.token:
        raise UsageError(f"--host {args.host} serves beyond this machine: give --token T (clients send "
                         "'Authorization: Bearer T'), or keep --host 127.0.0.1")
    if args.token is not None and (len(args.token) < 8 or any(c.isspace() for c in args.token)):
        raise UsageError("--token must be at least 8 characters without spaces, e.g. $(openssl rand -hex 16)")
    if args.workers < 1:
        raise UsageError(f"--workers is a number of processes, at least 1, got {args.workers}")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0-65535, got {args.port}")
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((args.host, args.port))
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc}): choose another "
                         "--port or --host") from None
