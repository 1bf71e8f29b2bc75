"""The HTTP + WebSocket service on emodet's torch-free runtime: ``create_app(predictor, ServeSettings())``.

    GET  /          the page (static/index.html): microphone or dropped files, live bars and timelines
    GET  /health    {"status": "ok"}; the one route without the token
    GET  /model     what the model is and needs (``describe()``), the server's version and limits
    POST /predict   an upload (multipart field 'file', or the raw body) -> what ``emodet predict --json``
                    prints for it: {file, label, probabilities}; with ?window=&hop= {file, windows, segments};
                    ?min_confidence=P answers 'uncertain' below P
    WS   /stream    live PCM in, a prediction every hop out (see ``emodet.serve.stream``)

Errors are ``{"detail": "one line"}`` with a 4xx status. Decoding and inference run on worker threads
(ONNX Runtime releases the GIL), so one slow upload never holds the others up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from .. import __version__
from ..core.errors import UsageError
from ..runtime.live import private_copy
from ..runtime.outputs import little_sound
from ..runtime.service import prediction_record
from .security import AccessMiddleware
from .stream import FORMATS, run_stream
from .uploads import Limits, UploadError, check_content_type, check_declared_size, decode_upload, multipart_file, read_body

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


@dataclass
class ServeSettings:
    """What ``emodet serve`` sets: the token (None: none needed), upload limits, the hosts answered
    (None: any; a server on 127.0.0.1 answers only loopback names)."""

    token: str | None = None
    max_upload_mb: float = 50.0
    max_seconds: float = 600.0
    allowed_hosts: tuple | None = None


class Prediction(BaseModel):
    file: str
    label: str
    probabilities: dict[str, float]
    warnings: list[str] | None = None  # e.g. silence or under 0.5 s of audio: the answer is a guess


class WindowPrediction(BaseModel):
    start: float
    end: float
    label: str
    probabilities: dict[str, float]


class Segment(BaseModel):
    start: float
    end: float
    label: str
    confidence: float


class WindowedPrediction(BaseModel):
    file: str
    windows: list[WindowPrediction]
    segments: list[Segment]
    warnings: list[str] | None = None


class Problem(BaseModel):
    detail: str


UPLOAD_BODY = {"requestBody": {"content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}},
    "audio/*": {"schema": {"type": "string", "format": "binary"}}}}}


def create_app(predictor, settings: ServeSettings | None = None) -> FastAPI:
    """A FastAPI app serving ``predictor`` (an ``EmotionPredictor`` or ``FusedPredictor``, calibrated or not)."""
    settings = settings or ServeSettings()
    limits = Limits(int(settings.max_upload_mb * 2**20), float(settings.max_seconds))
    app = FastAPI(title="emodet", version=__version__, summary="Speech emotion recognition on an exported model")
    app.state.predictor, app.state.settings = predictor, settings
    app.add_middleware(AccessMiddleware, token=settings.token, allowed_hosts=settings.allowed_hosts)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(RequestValidationError)
    async def one_line(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0]
        where = " ".join(str(p) for p in err.get("loc", ()))
        return JSONResponse({"detail": f"{where}: {err.get('msg')} (got {err.get('input')!r})"}, 422)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/model")
    async def model() -> dict:
        return model_info(predictor, settings)

    @app.post("/predict", response_model=None, openapi_extra=UPLOAD_BODY,
              responses={200: {"model": Prediction | WindowedPrediction}, **{s: {"model": Problem} for s in
                                                                              (400, 401, 409, 413, 415, 422)}})
    async def predict(request: Request, window: float | None = None, hop: float | None = None,
                      min_confidence: float = 0.0) -> JSONResponse:
        try:
            check_query(window, hop, min_confidence, limits)
            content_type = request.headers.get("content-type", "")
            is_form = check_content_type(content_type)
            check_declared_size(request.headers.get("content-length"), limits)
            body = await read_body(request.stream(), limits)
            name, data = multipart_file(body, content_type) if is_form else ("upload", body)
            record = await run_in_threadpool(predict_upload, predictor, data, name[:200], limits, window, hop,
                                             min_confidence)
        except UploadError as exc:
            log.info("refused an upload (%d): %s", exc.status, exc.reason)
            return JSONResponse({"detail": exc.reason}, exc.status)
        except ClientDisconnect:  # the client left mid-upload: nobody to answer
            return Response(status_code=400)
        return JSONResponse(record)

    @app.websocket("/stream")
    async def stream(websocket: WebSocket) -> None:
        await run_stream(websocket, predictor)

    return app


def check_query(window, hop, min_confidence, limits: Limits) -> None:
    if hop is not None and window is None:
        raise UploadError(422, "hop goes with window (seconds), e.g. ?window=2&hop=0.5")
    if window is not None and not 0 < window <= limits.max_seconds:
        raise UploadError(422, f"window must be seconds in (0, {limits.max_seconds:g}], got {window:g}")
    if hop is not None and not 0.05 <= hop:
        raise UploadError(422, f"hop must be at least 0.05 s, got {hop:g}")
    if not 0 <= min_confidence < 1:
        raise UploadError(422, f"min_confidence is a probability in [0, 1), got {min_confidence:g}")


def predict_upload(predictor, data: bytes, name: str, limits: Limits, window, hop, min_confidence) -> dict:
    """Decode and predict one upload (on a worker thread): the record ``emodet predict --json`` prints."""
    if predictor.needs_calibration and window is None:
        raise uncalibrated(predictor, name)
    wav, rate = decode_upload(data, name, limits)
    if predictor.needs_calibration:  # a long recording may calibrate on itself: on a copy, never the shared one
        predictor = private_copy(predictor)
    try:
        record = prediction_record(predictor, (wav, rate), name, window, hop, min_confidence)
    except UsageError as exc:
        if predictor.needs_calibration:
            raise uncalibrated(predictor, name) from None
        raise UploadError(422, f"{name}: {exc}") from None
    note = little_sound(wav, rate, name)  # said in the answer, not only in the server's log
    return {**record, "warnings": [note]} if note else record


def uncalibrated(predictor, name: str) -> UploadError:
    per = "speaker" if predictor.needs == "calibrate" else "domain"
    return UploadError(409, f"{name}: this model normalises per {per} and the server was started without "
                            f"--{'calibrate' if per == 'speaker' else 'adapt'}: restart it with recordings of the {per}, "
                            "stream with a calibration phase on /stream, or send a recording of at least 10 s with "
                            "?window=2")


def model_info(predictor, settings: ServeSettings) -> dict:
    """``describe()`` without server paths, whether it is calibrated, and this server's version and limits."""
    return {**without_paths(predictor.describe()), "calibrated": not predictor.needs_calibration,
            "server": {"emodet_version": __version__, "max_upload_mb": settings.max_upload_mb,
                       "max_seconds": settings.max_seconds, "token_required": settings.token is not None,
                       "stream": {"formats": sorted(FORMATS), "sample_rate": 16000, "window": 2.0, "hop": 0.5}}}


def without_paths(description: dict) -> dict:
    """A description with each model's file name instead of its path on the server."""
    out = {k: v for k, v in description.items() if k != "path"}
    if "path" in description:
        out["model"] = Path(description["path"]).name
    if "members" in out:
        out["members"] = [without_paths(m) for m in out["members"]]
    return out
