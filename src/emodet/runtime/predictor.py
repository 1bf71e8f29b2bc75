"""Torch-free inference with ONNX Runtime: ``EmotionPredictor("model.onnx").predict("clip.wav")``.

Imports only numpy, soundfile, soxr and onnxruntime. Works with models exported with the
feature front end in the graph (raw samples in) or without (features computed here in numpy).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..audio import load_audio, resample, to_mono
from ..errors import UsageError
from ..stats import frame_moments
from .frontend import NumpyFrontEnd


class EmotionPredictor:
    """Predict emotion probabilities with an exported model.

    ``predict(path_or_array, sr=None) -> {label: probability}``; ``predict_batch(items)``;
    ``predict_windows(...)`` for long recordings. Per-speaker normalised models use the
    statistics set by ``calibrate(recordings)`` (a few recordings of the speaker), or, when not
    calibrated, each recording's own statistics.
    """

    def __init__(self, model_path: str | os.PathLike, threads: int = 1, providers: list[str] | None = None):
        import onnxruntime as ort

        path = Path(model_path)
        if not path.is_file():
            raise UsageError(f"{path}: model file not found")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises several types for a bad file
            raise UsageError(f"{path}: not a loadable ONNX model ({str(exc).splitlines()[0][:200]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "emodet.labels" not in meta:
            raise UsageError(f"{path}: not an emodet model (no emodet metadata); export one with `emodet export`")
        self.path = path
        self.labels = json.loads(meta["emodet.labels"])
        self.sr = int(meta["emodet.sample_rate"])
        self.feature = meta["emodet.feature"]
        self.feature_params = json.loads(meta["emodet.feature_params"])
        self.normalizer = json.loads(meta["emodet.normalizer"])
        self.with_features = meta.get("emodet.with_features") == "1"
        self.version = meta.get("emodet.version")
        self.input_names = [i.name for i in self.session.get_inputs()]
        self._frontend = None
        self._speaker_stats: tuple[np.ndarray, np.ndarray] | None = None

    # -- features and normalisation ----------------------------------------------------------
    @property
    def frontend(self) -> NumpyFrontEnd:
        if self._frontend is None:
            self._frontend = NumpyFrontEnd(self.feature, self.feature_params, self.sr)
        return self._frontend

    def calibrate(self, recordings) -> None:
        """Per-speaker statistics from a few recordings (paths or arrays at the model's rate) of one speaker."""
        feats = [self.frontend(self._load(r)) for r in recordings]
        self._speaker_stats = frame_moments(feats)

    def _load(self, item, sr: int | None = None) -> np.ndarray:
        if isinstance(item, (str, os.PathLike)):
            return load_audio(item, self.sr)
        wav = to_mono(np.asarray(item, dtype=np.float32))
        if wav.ndim != 1 or wav.size == 0:
            raise UsageError(f"audio array must be 1-D (samples,) or 2-D (samples, channels) and non-empty, got shape {wav.shape}")
        if not np.isfinite(wav).all():
            raise UsageError("audio array holds NaN or infinite samples")
        return resample(wav, int(sr), self.sr) if sr and sr != self.sr else wav

    def _norm_inputs(self, wavs: list[np.ndarray]) -> dict:
        if "norm_mean" not in self.input_names:
            return {}
        if self._speaker_stats is not None:
            mean, std = self._speaker_stats
        else:  # not calibrated: each recording's own statistics (a batch shares the first one's)
            mean, std = frame_moments([self.frontend(wavs[0])])
        return {"norm_mean": mean, "norm_std": std}

    # -- prediction --------------------------------------------------------------------------
    def logits(self, wavs: list[np.ndarray]) -> np.ndarray:
        """Logits ``(B, C)`` for mono float32 signals at the model's rate."""
        if self.with_features:
            n = max(len(w) for w in wavs)
            audio = np.zeros((len(wavs), n), dtype=np.float32)
            for i, w in enumerate(wavs):
                audio[i, : len(w)] = w
            feed = {"audio": audio, "audio_lengths": np.array([len(w) for w in wavs], dtype=np.int64)}
        else:
            feats = [self.frontend(w) for w in wavs]
            t = max(f.shape[1] for f in feats)
            x = np.zeros((len(feats), feats[0].shape[0], t), dtype=np.float32)
            for i, f in enumerate(feats):
                x[i, :, : f.shape[1]] = f
            feed = {"features": x, "lengths": np.array([f.shape[1] for f in feats], dtype=np.int64)}
        if "norm_mean" in self.input_names and self._speaker_stats is None and len(wavs) > 1:
            return np.concatenate([self.logits([w]) for w in wavs])
        feed.update(self._norm_inputs(wavs))
        return self.session.run(["logits"], feed)[0]

    def predict_features(self, features: np.ndarray) -> dict:
        """Probabilities for precomputed features ``(F, T)`` (models exported without features)."""
        if self.with_features:
            raise UsageError("this model takes raw audio (exported --with-features); use predict()")
        feed = {"features": features[None].astype(np.float32), "lengths": np.array([features.shape[1]], np.int64)}
        if "norm_mean" in self.input_names:
            feed.update(dict(zip(("norm_mean", "norm_std"), self._speaker_stats or frame_moments([features]))))
        return self._to_dict(self.session.run(["logits"], feed)[0][0])

    def predict(self, item, sr: int | None = None) -> dict:
        """``{label: probability}`` for a file path or a samples array (give ``sr`` if not the model's rate)."""
        return self._to_dict(self.logits([self._load(item, sr)])[0])

    def predict_batch(self, items, sr: int | None = None) -> list[dict]:
        wavs = [self._load(i, sr) for i in items]
        return [self._to_dict(z) for z in self.logits(wavs)]

    def _to_dict(self, logits: np.ndarray) -> dict:
        p = _softmax(logits)
        return {lab: float(v) for lab, v in zip(self.labels, p)}

    def predict_windows(self, item, window_s: float, hop_s: float, sr: int | None = None) -> list[dict]:
        """Sliding windows over a long recording: ``[{start, end, label, probabilities}]`` (seconds)."""
        if window_s <= 0 or hop_s <= 0:
            raise UsageError(f"--window and --hop must be positive, got {window_s} and {hop_s}")
        wav = self._load(item, sr)
        win, hop = int(round(window_s * self.sr)), int(round(hop_s * self.sr))
        starts = list(range(0, max(1, len(wav) - win + hop), hop)) or [0]
        starts = [s for s in starts if s < len(wav)] or [0]
        out = []
        for s in starts:
            piece = wav[s:s + win]
            probs = self._to_dict(self.logits([piece])[0])
            out.append({"start": round(s / self.sr, 3), "end": round((s + len(piece)) / self.sr, 3),
                        "label": max(probs, key=probs.get), "probabilities": probs})
        return out


def smooth_segments(windows: list[dict], median: int = 3) -> list[dict]:
    """Merge sliding-window predictions into segments ``[{start, end, label, confidence}]``.

    Probabilities are smoothed over ``median`` neighbouring windows (a moving average), each
    window takes the top label, and runs of the same label merge; a segment ends where the
    next one's first window starts after its own midpoint, so segments never overlap.
    """
    if not windows:
        return []
    labels = list(windows[0]["probabilities"])
    probs = np.array([[w["probabilities"][lab] for lab in labels] for w in windows])
    k = max(1, int(median))
    if k > 1 and len(probs) > 2:
        pad = k // 2
        padded = np.pad(probs, ((pad, pad), (0, 0)), mode="edge")
        probs = np.stack([padded[i:i + k].mean(0) for i in range(len(probs))])
    top = probs.argmax(1)
    segments = []
    for i, w in enumerate(windows):
        label = labels[top[i]]
        if segments and segments[-1]["label"] == label:
            segments[-1]["end"] = w["end"]
            segments[-1]["_p"].append(probs[i, top[i]])
        else:
            if segments:  # boundary halfway through the overlap of neighbouring windows
                boundary = round((segments[-1]["end"] + w["start"]) / 2, 3) if w["start"] < segments[-1]["end"] else w["start"]
                segments[-1]["end"] = boundary
                start = boundary
            else:
                start = w["start"]
            segments.append({"start": start, "end": w["end"], "label": label, "_p": [probs[i, top[i]]]})
    for seg in segments:
        seg["confidence"] = round(float(np.mean(seg.pop("_p"))), 4)
    return segments


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()

