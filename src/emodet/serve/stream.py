"""``WS /stream``: live PCM in, a prediction every hop out, in bounded memory.

The conversation (JSON text messages; audio as binary messages of little-endian PCM, mono):

    client: {"type": "start", "format": "f32le"|"s16le", "sample_rate": 16000, "window": 2, "hop": 0.5,
             "min_confidence": 0}        optional, before any audio; or the same as query parameters
    server: {"type": "ready", "labels": [...], "needs": "nothing"|"calibrate"|"adapt", "calibrated": bool, ...}
    client: {"type": "calibrate"}, binary chunks of the speaker (a few seconds), {"type": "calibrate_end"}
    server: {"type": "calibrated", "seconds": 5.0}          per-stream statistics for models that need them
    client: binary chunks of 100-250 ms, in real time
    server: {"type": "prediction", "start", "end", "label", "probabilities", "current": {"label", "confidence"},
             "dropped_s"}  a window every hop; {"type": "dropped", ...} when windows were lost
    client: {"type": "end"}  ->  server: remaining windows, {"type": "summary", "seconds", "labels": {label: s}}, close

Audio waits in the ``LiveWindows`` ring buffer (window + 4 s): a client that sends faster than real
time, or reads the answers too slowly, loses the oldest windows (said in ``dropped`` messages), and the
server holds no more. Protocol mistakes get ``{"type": "error", "message"}`` and a close (1003/1008/1009).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..core.errors import EmodetError, UsageError
from ..runtime.live import LiveWindows, check_live_options, private_copy

log = logging.getLogger(__name__)
FORMATS = {"f32le": "<f4", "float32": "<f4", "s16le": "<i2", "int16": "<i2"}
MAX_CHUNK_SECONDS = 2.0
CALIBRATION_SECONDS = (1.0, 30.0)  # the least and most audio a stream's calibration takes
CALIBRATION_PIECE_SECONDS = 2.0  # calibration audio goes to the model as pieces (functionals need several)
CALIBRATE_HINT = ('send {"type": "calibrate"}, a few seconds of the speaker as audio, then {"type": "calibrate_end"} '
                  "before the live audio")


class StreamClosed(Exception):
    """A protocol mistake: close the stream with ``code`` after saying ``reason``."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


class StreamSession:
    """One stream's state, without I/O: ``on_text`` / ``on_audio`` take the client's messages, ``replies``
    holds what to say, ``due()`` the windows to predict, ``record`` their predictions."""

    def __init__(self, predictor, options: dict):
        self.predictor = predictor
        self.options = {"format": "f32le", "sample_rate": 16000, "window": 2.0, "hop": 0.5, "min_confidence": 0.0}
        self._set_options(options)
        self.live: LiveWindows | None = None
        self.calibration: list[np.ndarray] | None = None  # chunks while calibrating
        self.calibration_due = False
        self.replies: deque = deque(maxlen=32)
        self.remainder = b""  # bytes of a sample split between two chunks
        self.ended = False
        self.told_uncalibrated = False
        self.reported_drop = 0.0

    def _set_options(self, given: dict) -> None:
        unknown = sorted(set(given) - set(self.options) - {"type", "token"})
        if unknown:
            raise StreamClosed(1008, f"unknown stream option(s) {', '.join(unknown)}; valid: {', '.join(self.options)}")
        opts = {**self.options, **{k: v for k, v in given.items() if k in self.options}}
        if str(opts["format"]).lower() not in FORMATS:
            raise StreamClosed(1008, f"format {opts['format']!r}: valid formats are f32le (float32) and s16le (int16)")
        try:
            for key in ("window", "hop", "min_confidence"):
                opts[key] = float(opts[key])
            opts["sample_rate"] = int(opts["sample_rate"])
            check_live_options(opts["window"], opts["hop"], opts["min_confidence"])
        except (TypeError, ValueError, UsageError) as exc:
            raise StreamClosed(1008, f"stream option: {exc}") from None
        if not 8000 <= opts["sample_rate"] <= 192000:
            raise StreamClosed(1008, f"sample_rate {opts['sample_rate']} Hz: send 16000 Hz (8000 to 192000 taken)")
        opts["format"] = str(opts["format"]).lower()
        self.options = opts
        self.dtype = np.dtype(FORMATS[opts["format"]])
        self.sr = opts["sample_rate"]

    def hello(self) -> dict:
        return {"type": "ready", "labels": self.predictor.labels, **self.options, "needs": self.predictor.needs,
                "calibrated": not self.predictor.needs_calibration}

    # -- the client's messages ------------------------------------------------------------------
    def on_text(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            raise StreamClosed(1003, "a text message must be JSON, e.g. {\"type\": \"end\"}; audio goes as binary "
                                     "messages") from None
        kind = message.get("type", "start") if isinstance(message, dict) else None
        if kind == "start":
            if self.live is not None or self.calibration is not None:
                raise StreamClosed(1008, "stream options (start) go before any audio")
            self._set_options(message)
            self.replies.append(self.hello())
        elif kind == "calibrate":
            self.calibration = []
        elif kind == "calibrate_end":
            if self.calibration is None:
                raise StreamClosed(1008, 'calibrate_end without calibrate: ' + CALIBRATE_HINT)
            self.calibration_due = True
        elif kind == "end":
            self.ended = True
        else:
            raise StreamClosed(1003, f"unknown message type {kind!r}; valid: start, calibrate, calibrate_end, end")

    def on_audio(self, data: bytes) -> None:
        samples = self._samples(data)
        if self.calibration is not None and not self.calibration_due:
            held = sum(map(len, self.calibration)) / self.sr
            if held < CALIBRATION_SECONDS[1]:
                self.calibration.append(samples)
            return
        if self.predictor.needs_calibration and not self.calibration_due:  # (due: live audio while it calibrates)
            if not self.told_uncalibrated:
                self.told_uncalibrated = True
                self.replies.append({"type": "error", "message": f"this model normalises per {self._per()} and needs "
                                                                 f"calibration: {CALIBRATE_HINT}; audio dropped"})
            return
        if self.live is None:
            o = self.options
            self.live = LiveWindows(self.predictor, o["window"], o["hop"], self.sr, o["min_confidence"])
        self.live.push(samples)

    def _per(self) -> str:
        return "speaker" if self.predictor.needs == "calibrate" else "domain"

    def _samples(self, data: bytes) -> np.ndarray:
        data = self.remainder + data
        size = self.dtype.itemsize
        if len(data) > MAX_CHUNK_SECONDS * self.sr * size:
            raise StreamClosed(1009, f"an audio chunk of {len(data) / size / self.sr:.2f} s: send chunks of 100-250 ms "
                                     f"(at most {MAX_CHUNK_SECONDS:g} s)")
        whole = len(data) // size * size
        self.remainder = data[whole:]
        x = np.frombuffer(data[:whole], dtype=self.dtype)
        x = x.astype(np.float32) / 32768.0 if self.dtype.kind == "i" else x.astype(np.float32)
        if not np.isfinite(x).all():
            raise StreamClosed(1003, "audio chunk holds NaN or infinite samples")
        return x

    # -- the server's work ----------------------------------------------------------------------
    def take_calibration(self) -> np.ndarray:
        """The calibration audio, ending the calibration phase."""
        audio = np.concatenate(self.calibration) if self.calibration else np.zeros(0, np.float32)
        self.calibration = None
        return audio

    def calibrated(self, audio: np.ndarray):
        """``(a predictor calibrated on audio of the speaker or None, the reply)``; runs on a worker thread."""
        seconds = len(audio) / self.sr
        if seconds < CALIBRATION_SECONDS[0]:
            return None, {"type": "error", "message": f"calibration needs at least {CALIBRATION_SECONDS[0]:g} s of the "
                                                      f"speaker, got {seconds:.2f} s: {CALIBRATE_HINT}"}
        step = int(CALIBRATION_PIECE_SECONDS * self.sr)
        pieces = [(audio[i:i + step], self.sr) for i in range(0, len(audio), step) if len(audio[i:i + step]) > self.sr // 4]
        twin = private_copy(self.predictor)
        try:
            (twin.adapt if twin.needs == "adapt" else twin.calibrate)(pieces, few_ok=True)  # its length checked above
        except EmodetError as exc:
            return None, {"type": "error", "message": f"calibration failed: {exc}"}
        return twin, {"type": "calibrated", "seconds": round(seconds, 3)}

    def use(self, predictor) -> None:
        self.predictor = predictor
        if self.live is not None:
            self.live.predictor = predictor

    def due(self, finishing: bool = False):
        if self.live is None:
            return []
        return self.live.finish() if finishing else self.live.due()

    def drop_note(self) -> dict | None:
        """A ``dropped`` message when windows were lost since the last one."""
        if self.live is None or self.live.dropped_s <= self.reported_drop:
            return None
        new, self.reported_drop = self.live.dropped_s - self.reported_drop, self.live.dropped_s
        return {"type": "dropped", "seconds": round(new, 3), "total_s": self.live.dropped_s,
                "reason": "the predictions fell behind the audio (audio sent faster than real time, answers read too "
                          "slowly, or a busy server): the oldest windows were skipped"}

    def summary(self) -> dict:
        return {"type": "summary", **(self.live.summary() if self.live else
                                      {"seconds": 0.0, "labels": {}, "windows": 0, "dropped_s": 0.0})}


async def run_stream(websocket: WebSocket, predictor) -> None:
    """Serve one ``/stream`` connection until the client ends it, disconnects or breaks the protocol."""
    await websocket.accept()
    try:
        session = StreamSession(predictor, dict(websocket.query_params))
    except StreamClosed as exc:
        return await close_with_error(websocket, exc)
    wake = asyncio.Event()
    state = {"receiving": True, "error": None}

    async def receive() -> None:
        try:
            while not session.ended:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message.get("bytes") is not None:
                    session.on_audio(message["bytes"])
                elif message.get("text") is not None:
                    session.on_text(message["text"])
                wake.set()
        except StreamClosed as exc:
            state["error"] = exc
        finally:
            state["receiving"] = False
            wake.set()

    receiver = asyncio.create_task(receive())
    try:
        await websocket.send_json(session.hello())
        await answer(websocket, session, wake, state)
    except (WebSocketDisconnect, RuntimeError, OSError):  # the client left while we were answering
        log.debug("stream client left")
    except Exception:  # noqa: BLE001 - one stream's failure must not reach the others
        log.exception("stream failed")
        with contextlib.suppress(Exception):
            await websocket.close(1011, "internal error: see the server's log")
    finally:
        receiver.cancel()


async def answer(websocket: WebSocket, session: StreamSession, wake: asyncio.Event, state: dict) -> None:
    """The server's side: replies, calibration and a prediction for every window due, then the ending."""
    while True:
        await wake.wait()
        wake.clear()
        await send_due(websocket, session)
        if not state["receiving"]:
            break
    if state["error"] is not None:
        return await close_with_error(websocket, state["error"])
    if session.ended:
        await send_due(websocket, session, finishing=True)
        await websocket.send_json(session.summary())
        await websocket.close(1000)


async def send_due(websocket: WebSocket, session: StreamSession, finishing: bool = False) -> None:
    while session.replies:
        await websocket.send_json(session.replies.popleft())
    if session.calibration_due:
        twin, reply = await run_in_threadpool(session.calibrated, session.take_calibration())
        if twin is not None:
            session.use(twin)
        session.calibration_due = False
        await websocket.send_json(reply)
    if session.predictor.needs_calibration:  # audio that came while a calibration failed: nothing to say of it
        session.due(finishing)
        return
    for window in session.due(finishing):
        probs = await run_in_threadpool(session.predictor.predict, window.samples, session.sr)
        note = session.drop_note()
        if note:
            await websocket.send_json(note)
        await websocket.send_json({"type": "prediction", **session.live.record(window, probs)})


async def close_with_error(websocket: WebSocket, exc: StreamClosed) -> None:
    await websocket.send_json({"type": "error", "message": exc.reason})
    await websocket.close(exc.code, exc.reason[:120])
