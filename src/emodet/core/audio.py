"""Load any audio file as mono float32 at a target sample rate.

Decoding goes through soundfile (libsndfile: WAV 8/16/24/32-bit integer and float, FLAC,
OGG/Vorbis/Opus, MP3 and more) and, for what libsndfile cannot read (M4A/AAC, WebM, WMA, AMR,
...), through ``ffmpeg`` when it is on the PATH. Resampling goes through soxr at its high
quality setting, which is what ``librosa.load`` uses by default. ``-`` reads standard input.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .errors import AudioError, UsageError

DEFAULT_SAMPLE_RATE = 16000

# Extensions libsndfile decodes itself, and those that need ffmpeg. Parsers and the cache list
# files with both, so a file of a format this machine cannot decode is reported, never skipped unseen.
SOUNDFILE_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc", ".au", ".w64",
                        ".caf", ".rf64")
FFMPEG_EXTENSIONS = (".m4a", ".aac", ".mp4", ".webm", ".weba", ".mka", ".wma", ".amr", ".3gp", ".ac3", ".mov")
AUDIO_EXTENSIONS = SOUNDFILE_EXTENSIONS + FFMPEG_EXTENSIONS
STDIN = "-"  # the path that means standard input
_FFMPEG_HINT = "install ffmpeg (apt-get install ffmpeg, brew install ffmpeg or conda install ffmpeg)"


def is_audio_file(path: str | os.PathLike) -> bool:
    """True when the file name has an extension of an audio format (``AUDIO_EXTENSIONS``)."""
    return str(path).lower().endswith(AUDIO_EXTENSIONS)


def extensions_text() -> str:
    """Every extension read, for messages: which need ffmpeg and whether this machine has it."""
    ffmpeg = "found" if shutil.which("ffmpeg") else "not found: " + _FFMPEG_HINT
    return (f"{', '.join(e[1:] for e in SOUNDFILE_EXTENSIONS)}; with ffmpeg ({ffmpeg}): "
            f"{', '.join(e[1:] for e in FFMPEG_EXTENSIONS)}")


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Average channels: ``(frames, channels) -> (frames,)``; 1-D input passes through."""
    if samples.ndim == 2:
        return samples.mean(axis=1, dtype=np.float32)
    return samples


def resample(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a mono float32 signal with soxr (HQ); returns the input when rates match."""
    if orig_sr == target_sr:
        return wav
    return soxr.resample(wav, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)


def window_starts(n: int, window: int, hop: int) -> list[int]:
    """Start positions of windows of ``window`` every ``hop`` over ``n`` items: the last window may be short,
    none starts past the end, and at least one (at 0) always exists."""
    return [s for s in range(0, max(1, n - window + hop), hop) if s < n] or [0]


def load_audio(path: str | os.PathLike, sr: int | None = DEFAULT_SAMPLE_RATE) -> np.ndarray:
    """Read ``path`` as a mono float32 array ``(samples,)`` at ``sr`` Hz (``None`` keeps the file's rate).

    Raises ``AudioError`` naming the file when it cannot be decoded, holds no samples or
    holds NaN/infinite samples.
    """
    wav, _ = load_audio_with_rate(path, sr)
    return wav


def load_audio_with_rate(path: str | os.PathLike, sr: int | None = DEFAULT_SAMPLE_RATE) -> tuple[np.ndarray, int]:
    """Like ``load_audio`` but also returns the rate of the returned samples; ``"-"`` reads standard input."""
    if sr is not None and (isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0):
        raise AudioError(f"{path}: sample rate must be a positive integer, got {sr!r}")
    if str(path) == STDIN:
        return decode_audio_bytes(sys.stdin.buffer.read(), "standard input", sr)
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: {'is a folder, not an audio file' if path.is_dir() else 'file not found'}")
    samples, file_sr = _decode_file(path)
    return _finish(samples, int(file_sr), sr, str(path))


def decode_audio_bytes(data: bytes, name: str, sr: int | None = DEFAULT_SAMPLE_RATE) -> tuple[np.ndarray, int]:
    """Decode an audio file held in memory (an upload, standard input): ``(mono float32, rate)``;
    ``name`` says where it came from in errors."""
    if not data:
        raise AudioError(f"{name}: zero bytes of audio")
    try:
        with _quiet_stderr():
            samples, file_sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        if not shutil.which("ffmpeg"):
            raise AudioError(f"{name}: cannot decode audio (not a format libsndfile reads; for M4A/AAC/WebM/WMA "
                             f"{_FFMPEG_HINT})") from None
        with tempfile.NamedTemporaryFile(suffix=".audio") as tmp:  # ffmpeg probes seekable files best
            tmp.write(data)
            tmp.flush()
            samples, file_sr = _ffmpeg_decode(Path(tmp.name), name)
    return _finish(samples, int(file_sr), sr, name)


def audio_duration(path: str | os.PathLike) -> float:
    """Seconds of audio in ``path`` from its header (decoding it only where ffmpeg is needed)."""
    path = Path(path)
    if not path.suffix.lower() in FFMPEG_EXTENSIONS:
        try:
            return float(sf.info(str(path)).duration)
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
            pass
    samples, rate = _decode_file(path)
    return len(samples) / rate


def _finish(samples: np.ndarray, file_sr: int, sr: int | None, name: str) -> tuple[np.ndarray, int]:
    wav = np.ascontiguousarray(to_mono(samples), dtype=np.float32)
    if wav.size == 0:
        raise AudioError(f"{name}: audio holds no samples")
    if not np.isfinite(wav).all():
        bad = int((~np.isfinite(wav)).sum())
        raise AudioError(f"{name}: audio holds {bad} NaN or infinite samples")
    if sr is None:
        return wav, file_sr
    return resample(wav, file_sr, int(sr)), int(sr)


def _decode_file(path: Path) -> tuple[np.ndarray, int]:
    """``(samples, rate)`` of a file: libsndfile, else ffmpeg; an ``AudioError`` saying why not."""
    if path.suffix.lower() not in FFMPEG_EXTENSIONS:
        try:
            with _quiet_stderr() as notes:
                samples, rate = sf.read(str(path), dtype="float32", always_2d=False)
            _warn_if_truncated(path, len(samples), rate, notes.getvalue())
            return samples, rate
        except FileNotFoundError:
            raise AudioError(f"{path}: file not found") from None
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
            if _is_empty_file(path):
                raise AudioError(f"{path}: zero-byte file") from None
            if "not recognised" not in str(exc).lower() or not shutil.which("ffmpeg"):
                raise AudioError(f"{path}: cannot decode audio ({_decode_reason(path, exc)})") from None
        except OSError as exc:
            raise AudioError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    if _is_empty_file(path):
        raise AudioError(f"{path}: zero-byte file")
    if not shutil.which("ffmpeg"):
        raise AudioError(f"{path}: cannot decode audio ({path.suffix} needs ffmpeg, which is not on the PATH: "
                         f"{_FFMPEG_HINT})")
    return _ffmpeg_decode(path, str(path))


def _decode_reason(path: Path, exc: Exception) -> str:
    text = str(exc).split(": ", 1)[-1].strip() or type(exc).__name__
    if "possibly a pipe" in text:  # libsndfile's words for data no decoder accepts, although the file exists
        return f"not a valid {path.suffix.lstrip('.').upper() or 'audio'} file: no decoder accepts its bytes"
    return text


def _warn_if_truncated(path: Path, frames: int, rate: int, notes: str) -> None:
    """A compressed file cut short decodes without error: compare with what its header announces."""
    try:
        announced = sf.info(str(path)).frames
    except (sf.LibsndfileError, RuntimeError):
        return
    cut = announced > 0 and frames < 0.99 * announced
    if cut or "cannot read next header" in notes.lower():
        warnings.warn(f"{path}: the file seems truncated (decoded {frames / rate:.2f} s"
                      + (f" of the {announced / rate:.2f} s its header announces" if cut else "") + ")",
                      AudioTruncatedWarning, stacklevel=4)


class AudioTruncatedWarning(UserWarning):
    """A file decoded with fewer samples than it announces (a cut download, a copy interrupted)."""


def _ffmpeg_decode(path: Path, name: str) -> tuple[np.ndarray, int]:
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
                            "stream=sample_rate", "-of", "json", str(path)], capture_output=True, text=True)
    try:
        rate = int(json.loads(probe.stdout)["streams"][0]["sample_rate"])
    except (ValueError, KeyError, IndexError, TypeError):
        reason = (probe.stderr.strip().splitlines() or ["no audio stream"])[-1].replace(str(path), name)[:200]
        raise AudioError(f"{name}: cannot decode audio (ffmpeg: {reason})") from None
    out = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0", "-f", "f32le",
                          "-acodec", "pcm_f32le", "-ac", "1", "-"], capture_output=True)
    if out.returncode != 0:
        reason = (out.stderr.decode(errors="replace").strip().splitlines() or ["failed"])[-1].replace(str(path), name)[:200]
        raise AudioError(f"{name}: cannot decode audio (ffmpeg: {reason})")
    return np.frombuffer(out.stdout, dtype="<f4").astype(np.float32), rate


_STDERR_LOCK = threading.Lock()


@contextlib.contextmanager
def _quiet_stderr():
    """Capture what C libraries (libsndfile's mpg123) print on file descriptor 2 while decoding: their
    notes reach the user as one warning naming the file instead (yields a StringIO of the notes)."""
    notes = io.StringIO()
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (a notebook): nothing to capture
        yield notes
        return
    with _STDERR_LOCK, tempfile.TemporaryFile() as sink:
        saved = os.dup(fd)
        sys.stderr.flush()
        os.dup2(sink.fileno(), fd)
        try:
            yield notes
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            notes.write(sink.read().decode(errors="replace"))


def is_speed_factor(factor) -> bool:
    """Whether ``factor`` is a speed-perturbation factor ``speed_perturb`` takes: a number in [0.5, 2]."""
    return not isinstance(factor, bool) and isinstance(factor, (int, float)) and 0.5 <= factor <= 2.0


def check_speed_factors(speeds: list, source: str) -> None:
    """Speed-perturbation factors: numbers in [0.5, 2], none equal to 1 or listed twice (``source`` names
    the key or flag in the error)."""
    for f in speeds:
        if not is_speed_factor(f) or f == 1:
            raise UsageError(f"{source}: each factor must be a number in [0.5, 2] other than 1 "
                             f"(the recording itself is always kept), e.g. [0.9, 1.1]; got {f!r}")
    if len(set(speeds)) != len(speeds):
        raise UsageError(f"{source}: factor listed twice in {speeds}")


def speed_perturb(wav: np.ndarray, sr: int, factor: float) -> np.ndarray:
    """The signal played ``factor`` times as fast (Kaldi's/sox's ``speed``): ``len / factor`` samples at the
    same rate, pitch and formants scaled by ``factor`` with the tempo. Resampled with soxr (HQ)."""
    if not is_speed_factor(factor):
        raise ValueError(f"speed factor must be a number in [0.5, 2], got {factor!r}")
    if factor == 1:
        return wav
    return soxr.resample(wav, sr * float(factor), sr, quality="HQ").astype(np.float32, copy=False)


def _is_empty_file(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def trim_silence(wav: np.ndarray, sr: int, top_db: float, frame_seconds: float = 0.064,
                 hop_seconds: float = 0.016) -> tuple[np.ndarray, tuple[int, int]]:
    """Drop the leading and trailing frames quieter than ``top_db`` dB below the loudest frame.

    Frame RMS over centred frames of ``frame_seconds`` every ``hop_seconds`` (zero-padded at
    the edges), exactly ``librosa.effects.trim`` with the same frame and hop lengths in samples.
    Returns ``(trimmed, (start, end))``; a signal with no frame above the threshold (digital
    silence) comes back whole.
    """
    frame = max(1, int(round(frame_seconds * sr)))
    hop = max(1, int(round(hop_seconds * sr)))
    padded = np.pad(np.asarray(wav, dtype=np.float64), frame // 2)
    n_frames = 1 + (len(padded) - frame) // hop if len(padded) >= frame else 0
    if n_frames <= 0:
        return wav, (0, len(wav))
    sums = np.concatenate([[0.0], np.cumsum(padded * padded)])
    starts = np.arange(n_frames) * hop
    power = np.maximum((sums[starts + frame] - sums[starts]) / frame, 0.0)  # mean square = rms ** 2
    amin = 1e-10
    db = 10.0 * np.log10(np.maximum(power, amin)) - 10.0 * np.log10(max(power.max(), amin))
    loud = np.flatnonzero(db > -top_db)
    if loud.size == 0:
        return wav, (0, len(wav))
    start, end = int(loud[0] * hop), min(len(wav), int((loud[-1] + 1) * hop))
    return wav[start:end], (start, end)
