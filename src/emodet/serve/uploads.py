"""An upload from its request to decoded samples, each check as early and cheap as it can be.

Order: the content type (from the headers), the size (``Content-Length``, else counted while the
body streams in: never more than the limit is held), the multipart envelope (parsed in memory: no
spool files), the duration and integrity announced by the audio header (before decoding), then the
decode itself (libsndfile, ffmpeg for the rest). Each refusal is an ``UploadError`` with an HTTP
status and a one-line reason naming what was wrong and what would be valid.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from ..core.audio import decode_audio_bytes

RAW_TYPES = ("audio/", "video/", "application/octet-stream")
EXACT_FORMATS = ("WAV", "WAVEX", "RF64", "W64", "FLAC", "AIFF", "CAF", "AU")
VALID_TYPES = "multipart/form-data (a field 'file'), audio/*, video/* or application/octet-stream"


class UploadError(Exception):
    """A refused upload: ``status`` (4xx) and a one-line ``reason``."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass
class Limits:
    max_bytes: int = 50 * 1024 * 1024
    max_seconds: float = 600.0

    def too_large(self, n: int, counted: bool = False) -> UploadError:
        how = "after reading the first " if counted else ""
        return UploadError(413, f"upload {how}{n / 2**20:.1f} MB is over this server's limit of "
                                f"{self.max_bytes / 2**20:g} MB (--max-upload-mb); send a shorter or compressed "
                                "recording")

    def too_long(self, seconds: float) -> UploadError:
        return UploadError(413, f"the audio lasts {seconds:.0f} s, over this server's limit of {self.max_seconds:g} s "
                                "(--max-seconds); cut it into parts")


def check_content_type(content_type: str | None) -> bool:
    """True for multipart, False for a raw audio body; an ``UploadError`` (415) for anything else. No
    content type at all is taken as raw audio."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        return True
    if not kind or kind.startswith(RAW_TYPES):
        return False
    hint = " (curl: -F file=@clip.wav, or --data-binary with -H 'Content-Type: audio/wav')" if "form-urlencoded" in kind else ""
    raise UploadError(415, f"content type {kind!r} is not audio: send {VALID_TYPES}{hint}")


def check_declared_size(content_length: str | None, limits: Limits) -> None:
    """Refuse from ``Content-Length`` alone, before a byte of the body is read."""
    if content_length is None:
        return
    try:
        n = int(content_length)
    except ValueError:
        raise UploadError(400, f"Content-Length {content_length!r} is not a number of bytes") from None
    if n > limits.max_bytes:
        raise limits.too_large(n)


async def read_body(chunks, limits: Limits) -> bytes:
    """The body of an async iterator of byte chunks, refused (413) as soon as the count passes the limit."""
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limits.max_bytes:
            raise limits.too_large(len(body), counted=True)
    return bytes(body)


def multipart_file(body: bytes, content_type: str) -> tuple[str, bytes]:
    """``(file name, bytes)`` of the file part of a multipart/form-data body, parsed in memory."""
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header

    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        raise UploadError(400, "multipart/form-data without a boundary: let your HTTP client build the form")
    parts: list[dict] = []
    field, value = bytearray(), bytearray()

    def header_end() -> None:
        parts[-1]["headers"][bytes(field).lower()] = bytes(value)
        field.clear()
        value.clear()

    parser = MultipartParser(boundary, {
        "on_part_begin": lambda: parts.append({"headers": {}, "data": bytearray()}),
        "on_header_field": lambda d, s, e: field.extend(d[s:e]),
        "on_header_value": lambda d, s, e: value.extend(d[s:e]),
        "on_header_end": header_end,
        "on_part_data": lambda d, s, e: parts[-1]["data"].extend(d[s:e]),
    })
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise UploadError(400, f"malformed multipart body ({exc}); send the audio as field 'file'") from None
    for part in parts:
        params = parse_options_header(part["headers"].get(b"content-disposition", b""))[1]
        if b"filename" in params or params.get(b"name") == b"file":
            name = params.get(b"filename", b"").decode("utf-8", "replace") or "upload"
            return name, bytes(part["data"])
    raise UploadError(422, "the form holds no file: send the audio as a file field named 'file'")


def decode_upload(data: bytes, name: str, limits: Limits) -> tuple[np.ndarray, int]:
    """``(mono float32 samples, rate)`` of an upload: refused when empty, longer than the limit (from its header
    where it has one, before decoding), truncated or undecodable (``UploadError``, 4xx)."""
    from ..core.errors import AudioError

    if not data:
        raise UploadError(400, f"{name}: zero bytes of audio: send a recording (WAV, FLAC, MP3, OGG/Opus, M4A, WebM)")
    header_rate, announced, exact = announced_frames(data, name)
    if announced and announced / header_rate > limits.max_seconds:
        raise limits.too_long(announced / header_rate)
    try:
        wav, rate = decode_audio_bytes(data, name, sr=None)
    except AudioError as exc:
        raise UploadError(422, f"{exc}; valid: a complete recording in a format the server reads") from None
    if len(wav) / rate > limits.max_seconds:
        raise limits.too_long(len(wav) / rate)
    if exact and len(wav) / rate < 0.99 * announced / header_rate:  # e.g. a cut FLAC that ffmpeg decoded in part
        raise truncated(name, len(wav) / rate, announced / header_rate)
    return wav, rate


def announced_frames(data: bytes, name: str) -> tuple[int, int, bool]:
    """``(rate, frames, exact)`` its header announces (``(0, 0, False)`` where libsndfile reads no header);
    ``exact`` for formats whose header counts frames exactly (not MP3/OGG estimates). A WAV whose data chunk
    announces more than the upload holds is refused as truncated (libsndfile would read what is there)."""
    try:
        info = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        return 0, 0, False
    rate, frames = int(info.samplerate), int(info.frames)
    declared = wav_declared_frames(data)
    if declared and declared > frames:
        raise truncated(name, frames / rate, declared / rate)
    return rate, max(frames, 0), info.format in EXACT_FORMATS


def wav_declared_frames(data: bytes) -> int:
    """Frames a RIFF/WAVE header's ``data`` chunk announces (0 when unknown or a streaming placeholder)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return 0
    pos, block = 12, 0
    while pos + 8 <= len(data):
        tag, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        if tag == b"fmt " and pos + 22 <= len(data):
            block = struct.unpack("<H", data[pos + 20:pos + 22])[0]  # bytes a frame
        if tag == b"data":
            return size // block if block and size not in (0, 0xFFFFFFFF) else 0
        pos += 8 + size + (size & 1)
    return 0


def truncated(name: str, held: float, announced: float) -> UploadError:
    return UploadError(422, f"{name}: truncated: its header announces {announced:.2f} s of audio, the upload holds "
                            f"{held:.2f} s; send the complete file")
