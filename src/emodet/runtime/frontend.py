"""The log-mel / MFCC front end in numpy, for models exported without features (no torch).

Equal to ``emodet.features.LogMel`` / ``MFCC`` (and so to librosa): centred frames with zero
padding, periodic Hann window, Slaney mel filters, dB floored ``top_db`` below the maximum (and
relative to it with ``ref: max``).
"""

from __future__ import annotations

import numpy as np

from ..core.filters import dct_matrix, hann_window, mel_filterbank


class NumpyFrontEnd:
    """``(samples,) -> (features, frames)`` float32 for ``feature`` in ``logmel``/``mel``/``mfcc``."""

    def __init__(self, feature: str, params: dict, sr: int):
        if feature not in ("logmel", "mel", "mfcc"):
            raise ValueError(f"no numpy front end for feature {feature!r}; compute it yourself and call predict_features()")
        self.feature, self.sr = feature, sr
        self.n_fft, self.hop, self.win = int(params["n_fft"]), int(params["hop_length"]), int(params["win_length"])
        self.top_db, self.ref = params.get("top_db"), params.get("ref")
        window = np.zeros(self.n_fft, dtype=np.float64)
        left = (self.n_fft - self.win) // 2
        window[left:left + self.win] = hann_window(self.win)
        self.window = window
        self.mel = mel_filterbank(sr, self.n_fft, int(params["n_mels"]), params.get("fmin", 0.0), params.get("fmax"))
        self.dct = dct_matrix(int(params["n_mfcc"]), int(params["n_mels"])) if feature == "mfcc" else None

    def n_frames(self, n_samples: int) -> int:
        return 1 + n_samples // self.hop

    def __call__(self, wav: np.ndarray) -> np.ndarray:
        pad = self.n_fft // 2
        x = np.pad(np.asarray(wav, dtype=np.float64), (pad, pad))
        if len(x) < self.n_fft:
            x = np.pad(x, (0, self.n_fft - len(x)))
        frames = np.lib.stride_tricks.sliding_window_view(x, self.n_fft)[:: self.hop]
        spec = np.fft.rfft(frames * self.window, axis=1)
        power = (spec.real**2 + spec.imag**2).T  # (freq, frames)
        mel = self.mel.astype(np.float64) @ power
        if self.ref == "max":  # as emodet.features.spectral.AmplitudeToDB: relative to the loudest bin
            db = 10.0 * np.log10(np.maximum(mel / max(mel.max(), 1e-10), 1e-10))
            if self.top_db is not None:
                db = np.maximum(db, -self.top_db)
        else:
            db = 10.0 * np.log10(np.maximum(mel, 1e-10))
            if self.top_db is not None:
                db = np.maximum(db, db.max() - self.top_db)
        if self.dct is not None:
            db = self.dct.astype(np.float64) @ db
        return db.astype(np.float32)
