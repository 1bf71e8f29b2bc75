"""Load any audio file as mono float32 at a target sample rate.

Decoding goes through soundfile (libsndfile: WAV 8/16/24/32-bit integer and float, FLAC,
OGG/Vorbis, MP3 and more), resampling through soxr at its high quality setting, which is
what ``librosa.load`` uses by default.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .errors import AudioError

DEFAULT_SAMPLE_RATE = 16000

# Extensions the loader reads; parsers and the cache use this list to find audio files.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au", ".w64", ".caf")


def is_audio_file(path: str | os.PathLike) -> bool:
    """True when the file name has an extension the loader can decode."""
    return str(path).lower().endswith(AUDIO_EXTENSIONS)


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


def load_audio(path: str | os.PathLike, sr: int | None = DEFAULT_SAMPLE_RATE) -> np.ndarray:
    """Read ``path`` as a mono float32 array ``(samples,)`` at ``sr`` Hz (``None`` keeps the file's rate).

    Raises ``AudioError`` naming the file when it cannot be decoded, holds no samples or
    holds NaN/infinite samples.
    """
    wav, _ = load_audio_with_rate(path, sr)
    return wav


def load_audio_with_rate(path: str | os.PathLike, sr: int | None = DEFAULT_SAMPLE_RATE) -> tuple[np.ndarray, int]:
    """Like ``load_audio`` but also returns the rate of the returned samples."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: {'is a folder, not an audio file' if path.is_dir() else 'file not found'}")
    if sr is not None and (not isinstance(sr, (int, np.integer)) or sr <= 0):
        raise AudioError(f"{path}: sample rate must be a positive integer, got {sr!r}")
    try:
        samples, file_sr = sf.read(str(path), dtype="float32", always_2d=False)
    except FileNotFoundError:
        raise AudioError(f"{path}: file not found") from None
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        reason = "zero-byte file" if _is_empty_file(path) else f"cannot decode audio ({exc})"
        raise AudioError(f"{path}: {reason}") from None
    except OSError as exc:
        raise AudioError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    wav = np.ascontiguousarray(to_mono(samples), dtype=np.float32)
    if wav.size == 0:
        raise AudioError(f"{path}: audio holds no samples")
    if not np.isfinite(wav).all():
        bad = int((~np.isfinite(wav)).sum())
        raise AudioError(f"{path}: audio holds {bad} NaN or infinite samples")
    if sr is None:
        return wav, int(file_sr)
    return resample(wav, int(file_sr), int(sr)), int(sr)


def is_speed_factor(factor) -> bool:
    """Whether ``factor`` is a speed-perturbation factor ``speed_perturb`` takes: a number in [0.5, 2]."""
    return not isinstance(factor, bool) and isinstance(factor, (int, float)) and 0.5 <= factor <= 2.0


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
