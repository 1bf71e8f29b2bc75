"""Torch-free inference with ONNX Runtime: ``EmotionPredictor("model.onnx").predict("clip.wav")``.

Imports only numpy, soundfile, soxr and onnxruntime (and openSMILE for functionals models).
Works with models exported with the feature front end in the graph (raw samples in) or without
(log-mel / MFCC computed here in numpy, eGeMAPS / ComParE with openSMILE); ``FusedPredictor``
averages several such models.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..audio import load_audio_with_rate, resample, to_mono
from ..errors import UsageError
from ..smile import FUNCTIONAL_SETS, functionals
from ..stats import frame_moments
from .frontend import NumpyFrontEnd


class _ProbabilityAPI:
    """``predict`` / ``predict_batch`` for any predictor with ``labels`` and ``probabilities(items, sr)``."""

    labels: list[str]

    def probabilities(self, items, sr: int | None = None) -> np.ndarray:
        raise NotImplementedError

    def predict(self, item, sr: int | None = None) -> dict:
        """``{label: probability}`` for a file path or a samples array (give ``sr`` if not the model's rate)."""
        return _as_dict(self.labels, self.probabilities([item], sr)[0])

    def predict_batch(self, items, sr: int | None = None) -> list[dict]:
        return [_as_dict(self.labels, p) for p in self.probabilities(items, sr)]


class EmotionPredictor(_ProbabilityAPI):
    """Predict emotion probabilities with an exported model.

    ``predict(path_or_array, sr=None) -> {label: probability}``; ``predict_batch(items)``;
    ``predict_windows(...)`` for long recordings. Per-speaker normalised models use the
    statistics set by ``calibrate(recordings)`` (a few recordings of the speaker), or, when not
    calibrated, each recording's own statistics (spectral features only: one recording's
    functionals have no spread, so a per-speaker functionals model needs ``calibrate``).
    Models over openSMILE functionals (``egemaps``, ``compare``; exported without features)
    compute them here with openSMILE at each file's own rate, as in training.
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
        self.native_rate = meta.get("emodet.native_rate") == "1" or self.feature in FUNCTIONAL_SETS
        self.version = meta.get("emodet.version")
        self.input_names = [i.name for i in self.session.get_inputs()]
        self._frontend = None
        self._speaker_stats: tuple[np.ndarray, np.ndarray] | None = None

    # -- features and normalisation ----------------------------------------------------------
    @property
    def needs_calibration(self) -> bool:
        """Per-speaker normalised functionals: statistics must come from ``calibrate``, not the recording."""
        return "norm_mean" in self.input_names and self.feature in FUNCTIONAL_SETS

    @property
    def frontend(self) -> NumpyFrontEnd:
        if self._frontend is None:
            self._frontend = NumpyFrontEnd(self.feature, self.feature_params, self.sr)
        return self._frontend

    def features(self, wav: np.ndarray, rate: int | None = None) -> np.ndarray:
        """The model's input features ``(F, T)`` for a mono signal (at ``rate``, default the model's)."""
        if self.feature in FUNCTIONAL_SETS:
            return functionals(self.feature, wav, int(rate or self.sr), self.feature_params.get("trim_db"))
        return self.frontend(wav)

    def calibrate(self, recordings, sr: int | None = None) -> None:
        """Per-speaker statistics from a few recordings (paths, or arrays at ``sr``) of one speaker."""
        recordings = list(recordings)
        if self.needs_calibration and len(recordings) < 2:
            raise UsageError(f"calibrating {self.path.name} ({self.feature} functionals, one vector a recording) "
                             f"needs several recordings of the speaker, got {len(recordings)}")
        self._speaker_stats = frame_moments(self.features(*self._load(r, sr)) for r in recordings)

    def _load(self, item, sr: int | None = None) -> tuple[np.ndarray, int]:
        """``(mono float32 samples, their rate)``: the model's rate, or the item's own for native-rate features."""
        if isinstance(item, (str, os.PathLike)):
            return load_audio_with_rate(item, None if self.native_rate else self.sr)
        wav = to_mono(np.asarray(item, dtype=np.float32))
        if wav.ndim != 1 or wav.size == 0:
            raise UsageError(f"audio array must be 1-D (samples,) or 2-D (samples, channels) and non-empty, got shape {wav.shape}")
        if not np.isfinite(wav).all():
            raise UsageError("audio array holds NaN or infinite samples")
        if self.native_rate:
            return wav, int(sr or self.sr)
        return (resample(wav, int(sr), self.sr) if sr and sr != self.sr else wav), self.sr

    def _norm_inputs(self, first_features) -> dict:
        if "norm_mean" not in self.input_names:
            return {}
        if self._speaker_stats is not None:
            mean, std = self._speaker_stats
        elif self.needs_calibration:
            raise UsageError(f"{self.path.name} normalises {self.feature} functionals per speaker: call calibrate() "
                             "(emodet predict --calibrate FILE...) with a few recordings of the speaker; one "
                             "recording's own functionals have no spread to normalise with")
        else:  # not calibrated: each recording's own statistics (a batch shares the first one's)
            mean, std = frame_moments([first_features()])
        return {"norm_mean": mean, "norm_std": std}

    # -- prediction --------------------------------------------------------------------------
    def logits(self, wavs: list[np.ndarray], rates: list[int] | None = None) -> np.ndarray:
        """Logits ``(B, C)`` for mono float32 signals at the model's rate (or at ``rates``, native-rate features)."""
        rates = rates or [self.sr] * len(wavs)
        if "norm_mean" in self.input_names and self._speaker_stats is None and len(wavs) > 1:
            return np.concatenate([self.logits([w], [r]) for w, r in zip(wavs, rates)])
        if self.with_features:
            n = max(len(w) for w in wavs)
            audio = np.zeros((len(wavs), n), dtype=np.float32)
            for i, w in enumerate(wavs):
                audio[i, : len(w)] = w
            feed = {"audio": audio, "audio_lengths": np.array([len(w) for w in wavs], dtype=np.int64)}
            feed.update(self._norm_inputs(lambda: self.features(wavs[0], rates[0])))
        else:
            feats = [self.features(w, r) for w, r in zip(wavs, rates)]
            t = max(f.shape[1] for f in feats)
            x = np.zeros((len(feats), feats[0].shape[0], t), dtype=np.float32)
            for i, f in enumerate(feats):
                x[i, :, : f.shape[1]] = f
            feed = {"features": x, "lengths": np.array([f.shape[1] for f in feats], dtype=np.int64)}
            feed.update(self._norm_inputs(lambda: feats[0]))
        return self.session.run(["logits"], feed)[0]

    def probabilities(self, items, sr: int | None = None) -> np.ndarray:
        """Probabilities ``(B, C)`` for paths or arrays (at ``sr``)."""
        loaded = [self._load(i, sr) for i in items]
        return np.stack([_softmax(z) for z in self.logits([w for w, _ in loaded], [r for _, r in loaded])])

    def predict_features(self, features: np.ndarray) -> dict:
        """Probabilities for precomputed features ``(F, T)`` (models exported without features)."""
        if self.with_features:
            raise UsageError("this model takes raw audio (exported --with-features); use predict()")
        feed = {"features": features[None].astype(np.float32), "lengths": np.array([features.shape[1]], np.int64)}
        feed.update(self._norm_inputs(lambda: features))
        return _as_dict(self.labels, _softmax(self.session.run(["logits"], feed)[0][0]))

    def window_probabilities(self, item, window_s: float, hop_s: float, sr: int | None = None) -> list[tuple]:
        """``[(start_s, end_s, probabilities)]`` over sliding windows of a recording."""
        if window_s <= 0 or hop_s <= 0:
            raise UsageError(f"--window and --hop must be positive, got {window_s} and {hop_s}")
        wav, rate = self._load(item, sr)
        win, hop = int(round(window_s * rate)), int(round(hop_s * rate))
        starts = [s for s in range(0, max(1, len(wav) - win + hop), hop) if s < len(wav)] or [0]
        out = []
        for s in starts:
            piece = wav[s:s + win]
            out.append((round(s / rate, 3), round((s + len(piece)) / rate, 3),
                        _softmax(self.logits([piece], [rate])[0])))
        return out

    def predict_windows(self, item, window_s: float, hop_s: float, sr: int | None = None) -> list[dict]:
        """Sliding windows over a long recording: ``[{start, end, label, probabilities}]`` (seconds)."""
        return _window_dicts(self.labels, self.window_probabilities(item, window_s, hop_s, sr))


class FusedPredictor(_ProbabilityAPI):
    """Late fusion of exported models: the weighted mean of their probabilities.

    Members may use different features (e.g. a log-mel CNN with its front end in the graph and
    a linear model over openSMILE functionals); each computes its own from the audio, at its
    own rate, with its own per-speaker statistics. They must share their labels.
    Same API as ``EmotionPredictor``.
    """

    def __init__(self, model_paths, weights: list[float] | None = None, threads: int = 1):
        self.members = [EmotionPredictor(p, threads) for p in model_paths]
        if not self.members:
            raise UsageError("a fused predictor needs at least one model")
        first = self.members[0]
        for m in self.members[1:]:
            if m.labels != first.labels:
                raise UsageError(f"models to fuse must share their labels: {first.path.name} has {first.labels}, "
                                 f"{m.path.name} has {m.labels}")
        weights = [1.0] * len(self.members) if weights is None else [float(w) for w in weights]
        if len(weights) != len(self.members) or min(weights) < 0 or sum(weights) <= 0:
            raise UsageError(f"fusion weights {weights}: need one non-negative weight a model "
                             f"({len(self.members)} models), not all zero")
        self.weights = np.array(weights) / sum(weights)
        self.labels = first.labels

    @property
    def needs_calibration(self) -> bool:
        return any(m.needs_calibration for m in self.members)

    def calibrate(self, recordings, sr: int | None = None) -> None:
        recordings = list(recordings)
        for m in self.members:
            m.calibrate(recordings, sr)

    def combine(self, member_probabilities: list[np.ndarray]) -> np.ndarray:
        """The weighted mean of the members' probabilities ``(B, C)``, in member order."""
        return sum(w * p for w, p in zip(self.weights, member_probabilities))

    def probabilities(self, items, sr: int | None = None) -> np.ndarray:
        items = list(items)
        return self.combine([m.probabilities(items, sr) for m in self.members])

    def predict_windows(self, item, window_s: float, hop_s: float, sr: int | None = None) -> list[dict]:
        per_member = [m.window_probabilities(item, window_s, hop_s, sr) for m in self.members]
        n = min(len(w) for w in per_member)  # members at different rates may round the last window apart
        fused = [(start, end, self.combine([pm[i][2] for pm in per_member]))
                 for i, (start, end, _) in enumerate(per_member[0][:n])]
        return _window_dicts(self.labels, fused)


def _as_dict(labels: list[str], probs: np.ndarray) -> dict:
    return {lab: float(v) for lab, v in zip(labels, probs)}


def _window_dicts(labels: list[str], windows: list[tuple]) -> list[dict]:
    out = []
    for start, end, probs in windows:
        d = _as_dict(labels, probs)
        out.append({"start": start, "end": end, "label": max(d, key=d.get), "probabilities": d})
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

