"""Spectral front end as torch modules (torchaudio's design, built on ``torch.stft``).

Each module is batched: ``(..., time)`` in, ``(..., features, frames)`` out. Fixed tensors
are buffers, so the same module runs on CPU or GPU and exports to ONNX unchanged.
Numerically these equal librosa with the same parameters (``center=True``, constant padding,
periodic Hann window, Slaney mel filters, ``power_to_db(ref=1.0, amin=1e-10, top_db=80)``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import UsageError
from ..filters import dct_matrix, mel_filterbank

# Defaults follow the usual speech front end: 25 ms window, 10 ms hop at the sample rate in use.
FRAME_DEFAULTS = {
    "n_fft": None,  # None: the next power of two >= win_length (512 at 16 kHz)
    "win_length": None,  # None: 25 ms (400 samples at 16 kHz)
    "hop_length": None,  # None: 10 ms (160 samples at 16 kHz)
    "n_mels": 64,
    "fmin": 0.0,
    "fmax": None,  # None: sr / 2
    "top_db": 80.0,  # None: no floor relative to the loudest bin
}
LOGMEL_DEFAULTS = dict(FRAME_DEFAULTS)
MFCC_DEFAULTS = {**FRAME_DEFAULTS, "n_mfcc": 40}


def resolve_frame_params(sr: int, params: dict) -> dict:
    """Fill window sizes that are ``None`` from ``sr`` and check every value; returns a new dict."""
    p = dict(params)
    if p.get("win_length") is None:
        p["win_length"] = int(round(0.025 * sr)) if p.get("n_fft") is None else int(p["n_fft"])
    if p.get("hop_length") is None:
        p["hop_length"] = int(round(0.010 * sr))
    if p.get("n_fft") is None:
        p["n_fft"] = 1 << max(0, math.ceil(math.log2(p["win_length"])))
    for key in ("n_fft", "win_length", "hop_length", "n_mels", "n_mfcc"):
        if key in p:
            value = p[key]
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise UsageError(f"feature parameter {key!r} must be a positive integer, got {value!r}")
    if p["win_length"] > p["n_fft"]:
        raise UsageError(f"feature parameter 'win_length' ({p['win_length']}) must not exceed 'n_fft' ({p['n_fft']})")
    fmin = p.get("fmin", 0.0)
    fmax = sr / 2.0 if p.get("fmax") is None else p["fmax"]
    if isinstance(fmin, bool) or not isinstance(fmin, (int, float)) or not isinstance(fmax, (int, float)) \
            or not 0 <= fmin < fmax <= sr / 2.0:
        raise UsageError(f"feature parameters need 0 <= fmin < fmax <= sr/2 ({sr / 2:g} Hz), got fmin={p.get('fmin')!r}, fmax={p.get('fmax')!r}")
    if p.get("n_mfcc") is not None and p["n_mfcc"] > p["n_mels"]:
        raise UsageError(f"feature parameter 'n_mfcc' ({p['n_mfcc']}) must not exceed 'n_mels' ({p['n_mels']})")
    if p.get("top_db") is not None and (not isinstance(p["top_db"], (int, float)) or p["top_db"] < 0):
        raise UsageError(f"feature parameter 'top_db' must be a non-negative number or null, got {p['top_db']!r}")
    return p


class Spectrogram(nn.Module):
    """Power spectrogram ``(..., time) -> (..., n_fft // 2 + 1, frames)``.

    ``method="stft"`` uses ``torch.stft`` (fastest in PyTorch); ``method="conv"`` computes the
    same DFT as a strided ``conv1d`` with a fixed windowed Fourier basis, which ONNX Runtime
    runs about twice as fast as its STFT operator on CPU (used for exported graphs).
    """

    def __init__(self, n_fft: int, hop_length: int, win_length: int, power: float = 2.0, center: bool = True,
                 method: str = "stft"):
        super().__init__()
        if method not in ("stft", "conv"):
            raise ValueError(f"method must be 'stft' or 'conv', got {method!r}")
        self.n_fft, self.hop_length, self.win_length = n_fft, hop_length, win_length
        self.power, self.center, self.method = power, center, method
        self.register_buffer("window", torch.hann_window(win_length, periodic=True), persistent=False)
        if method == "conv":
            padded = torch.zeros(n_fft, dtype=torch.float64)
            left = (n_fft - win_length) // 2
            padded[left:left + win_length] = torch.hann_window(win_length, periodic=True, dtype=torch.float64)
            angle = 2 * math.pi * torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None] * \
                torch.arange(n_fft, dtype=torch.float64)[None, :] / n_fft
            basis = torch.cat([torch.cos(angle) * padded, -torch.sin(angle) * padded])
            self.register_buffer("basis", basis.float()[:, None, :], persistent=False)

    def _conv_power(self, flat: torch.Tensor) -> torch.Tensor:
        x = flat[:, None, :]
        if self.center:
            x = nn.functional.pad(x, (self.n_fft // 2, self.n_fft // 2))
        y = nn.functional.conv1d(x, self.basis.to(x.dtype), stride=self.hop_length)
        half = self.n_fft // 2 + 1
        power = y[:, :half] ** 2 + y[:, half:] ** 2
        return power if self.power == 2.0 else power.pow(self.power / 2.0)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        lead = wav.shape[:-1]
        if self.method == "conv":
            spec = self._conv_power(wav.reshape(-1, wav.shape[-1]))
            return spec.reshape(lead + spec.shape[-2:])
        flat = wav.reshape(-1, wav.shape[-1])
        spec = torch.stft(
            flat, self.n_fft, self.hop_length, self.win_length, self.window.to(flat.dtype),
            center=self.center, pad_mode="constant", return_complex=True,
        )
        if self.power == 2.0:  # |X|^2 without abs()'s square root: 5x faster, and exact
            spec = spec.real.square() + spec.imag.square()
        else:
            spec = spec.abs().pow(self.power)
        return spec.reshape(lead + spec.shape[-2:])


class MelScale(nn.Module):
    """Mel filter bank ``(..., n_fft // 2 + 1, frames) -> (..., n_mels, frames)``."""

    def __init__(self, sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None):
        super().__init__()
        fb = torch.from_numpy(mel_filterbank(sr, n_fft, n_mels, fmin, fmax))
        self.register_buffer("filters", fb, persistent=False)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.filters.to(spec.dtype), spec)


class AmplitudeToDB(nn.Module):
    """Power to decibels ``10 log10(max(x, amin))``, floored ``top_db`` below each item's maximum.

    ``(..., features, frames) -> (..., features, frames)``; the maximum is taken per item over
    the last two dimensions, as ``librosa.power_to_db`` does for one signal.
    """

    def __init__(self, top_db: float | None = 80.0, amin: float = 1e-10):
        super().__init__()
        self.top_db, self.amin = top_db, amin

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        db = 10.0 * torch.log10(torch.clamp(power, min=self.amin))
        if self.top_db is not None:
            peak = db.amax(dim=(-2, -1), keepdim=True)
            db = torch.maximum(db, peak - self.top_db)
        return db


class LogMel(nn.Module):
    """Log-mel spectrogram in dB: ``(..., time) -> (..., n_mels, frames)``."""

    def __init__(self, sr: int = 16000, n_fft: int = 512, hop_length: int = 160, win_length: int = 400,
                 n_mels: int = 64, fmin: float = 0.0, fmax: float | None = None, top_db: float | None = 80.0):
        super().__init__()
        self.spectrogram = Spectrogram(n_fft, hop_length, win_length)
        self.mel = MelScale(sr, n_fft, n_mels, fmin, fmax)
        self.to_db = AmplitudeToDB(top_db)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.to_db(self.mel(self.spectrogram(wav)))


class MFCC(nn.Module):
    """MFCC (DCT-II, orthonormal, of the log-mel in dB): ``(..., time) -> (..., n_mfcc, frames)``."""

    def __init__(self, sr: int = 16000, n_mfcc: int = 40, n_fft: int = 512, hop_length: int = 160,
                 win_length: int = 400, n_mels: int = 64, fmin: float = 0.0, fmax: float | None = None,
                 top_db: float | None = 80.0):
        super().__init__()
        self.logmel = LogMel(sr, n_fft, hop_length, win_length, n_mels, fmin, fmax, top_db)
        self.register_buffer("dct", torch.from_numpy(dct_matrix(n_mfcc, n_mels)), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.dct.to(wav.dtype), self.logmel(wav))


def build_logmel(sr: int, params: dict) -> LogMel:
    """A ``LogMel`` module from registry parameters (librosa's names)."""
    p = resolve_frame_params(sr, params)
    return LogMel(sr, p["n_fft"], p["hop_length"], p["win_length"], p["n_mels"], p["fmin"], p["fmax"], p["top_db"])


def build_mfcc(sr: int, params: dict) -> MFCC:
    """An ``MFCC`` module from registry parameters (librosa's names)."""
    p = resolve_frame_params(sr, params)
    return MFCC(sr, p["n_mfcc"], p["n_fft"], p["hop_length"], p["win_length"], p["n_mels"], p["fmin"], p["fmax"], p["top_db"])


def use_conv_spectrogram(module: nn.Module) -> nn.Module:
    """Swap every ``Spectrogram`` inside ``module`` for its ``method="conv"`` twin (same numbers, within
    float rounding: 2e-4 dB on speech); used for exported graphs. Returns ``module``."""
    for name, child in list(module.named_children()):
        if isinstance(child, Spectrogram) and child.method != "conv":
            setattr(module, name, Spectrogram(child.n_fft, child.hop_length, child.win_length, child.power,
                                              child.center, method="conv"))
        else:
            use_conv_spectrogram(child)
    return module
