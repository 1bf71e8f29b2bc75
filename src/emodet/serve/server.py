"""Running the app under uvicorn: one process, or ``workers`` processes that each load the model.

Worker processes import the app by name (``app_from_environment``), so what they need to build it, the
model files, calibration recordings and settings, travels in one environment variable as JSON.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict

from ..runtime.service import open_predictor
from .app import ServeSettings, create_app

ENV = "EMODET_SERVE_CONFIG"
WS_MAX_BYTES = 1 << 20  # one WebSocket message: far above a 250 ms chunk, far below memory trouble


def run_server(predictor, spec: dict, settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000,
               workers: int = 1, access_log: bool = False) -> None:
    """Serve until interrupted. ``spec`` (``open_predictor``'s keyword arguments) rebuilds ``predictor`` in
    each worker process when ``workers > 1``."""
    import uvicorn

    # audio does not deflate: compressing each chunk would only cost CPU on both sides
    common = {"host": host, "port": port, "access_log": access_log, "ws_max_size": WS_MAX_BYTES,
              "ws_per_message_deflate": False, "server_header": False, "proxy_headers": False, "log_level": "info"}
    if workers <= 1:
        uvicorn.run(create_app(predictor, settings), **common)
        return
    os.environ[ENV] = json.dumps({"spec": spec, "settings": asdict(settings)})
    uvicorn.run(f"{__name__}:app_from_environment", factory=True, workers=workers, **common)


def app_from_environment():
    """The app of a worker process, from ``EMODET_SERVE_CONFIG``."""
    config = json.loads(os.environ[ENV])
    settings = config["settings"]
    if settings.get("allowed_hosts") is not None:
        settings["allowed_hosts"] = tuple(settings["allowed_hosts"])
    return create_app(open_predictor(**config["spec"]), ServeSettings(**settings))
