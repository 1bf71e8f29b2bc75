"""Torch-free inference with ONNX Runtime: ``EmotionPredictor("model.onnx").predict("clip.wav")``.

Imports only numpy, soundfile, soxr and onnxruntime (and openSMILE for functionals models).
Works with models exported with the feature front end in the graph (raw samples in) or without
(log-mel / MFCC computed here in numpy, eGeMAPS / ComParE with openSMILE).

A model's normalisation decides what it needs at deployment (``needs``): ``nothing`` (global or no
normalisation), ``calibrate`` (per speaker: a few recordings of the speaker) or ``adapt`` (per
corpus: unlabelled recordings of the new domain). Asked to predict without what it needs, it
refuses with a message saying what to give, rather than answer nonsense: a recording normalised
with its own statistics and then pooled is the same vector for every recording.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from ..core.audio import load_audio_with_rate, resample, to_mono, trim_silence, window_starts
from ..core.errors import UsageError
from ..core.files import expand_inputs
from ..core.fusion import softmax
from ..core.smile import FUNCTIONAL_SETS, functionals
from ..core.stats import group_inputs
from .frontend import NumpyFrontEnd
from .outputs import CalibrationWarning, ProbabilityAPI, as_dict, warn_if_few, warn_little_sound, window_dicts

SELF_CALIBRATION_SECONDS = 10.0  # a long recording may normalise its own windows (with a warning)


class EmotionPredictor(ProbabilityAPI):
    """Predict emotion probabilities with an exported model.

    ``predict(path_or_array, sr=None) -> {label: probability}``; ``predict_batch(items)``;
    ``predict_windows(...)`` for long recordings; ``calibrate(recordings)`` (per-speaker models)
    and ``adapt(recordings)`` (per-corpus models) set the normalisation statistics (recordings: a list of
    paths or arrays, or one path: a file, a folder of audio files or a quoted glob). Models over
    openSMILE functionals compute them here with openSMILE at each file's own rate, as in training.
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
        self.metadata = dict(meta)
        self.labels = json.loads(meta["emodet.labels"])
        self.sr = int(meta["emodet.sample_rate"])
        self.feature = meta["emodet.feature"]
        self.feature_params = json.loads(meta["emodet.feature_params"])
        self.normalizer = json.loads(meta["emodet.normalizer"])
        self.with_features = meta.get("emodet.with_features") == "1"
        self.native_rate = meta.get("emodet.native_rate") == "1" or self.feature in FUNCTIONAL_SETS
        self.version = meta.get("emodet.version")
        # a pretrained encoder in the graph sees at most this much at once: longer recordings go in windows
        self.max_seconds = float(meta["emodet.max_seconds"]) if meta.get("emodet.max_seconds") else None
        # temperature scaling fitted on held-out predictions: honest confidences, the same answers
        self.temperature = float(meta.get("emodet.temperature", 1.0))
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        # files exported before "emodet.needs" existed: statistics as inputs meant per-speaker normalisation
        self.needs = meta.get("emodet.needs") or ("calibrate" if "norm_mean" in self.input_names else "nothing")
        self._frontend = None
        self._stats: dict[str, np.ndarray] | None = None  # the normalisation inputs of a calibrated / adapted model

    # -- what the model needs ----------------------------------------------------------------
    @property
    def _per(self) -> str:
        """What a grouped model's statistics are of: ``speaker`` (it needs calibrate) or ``corpus`` (adapt)."""
        return "speaker" if self.needs == "calibrate" else "corpus"

    @property
    def needs_calibration(self) -> bool:
        """Whether predictions need ``calibrate`` (per speaker) or ``adapt`` (per corpus) first."""
        return self.needs != "nothing" and self._stats is None

    def calibrate(self, recordings, sr: int | None = None, *, few_ok: bool = False) -> None:
        """Per-speaker statistics from a few recordings (paths, or arrays at ``sr``) of one speaker (fewer than 3
        warn, unless ``few_ok``: e.g. pieces of one stretch of speech whose length the caller has checked)."""
        self._set_statistics(recordings, sr, "calibrating", "of the speaker", "calibration", few_ok)

    def adapt(self, recordings, sr: int | None = None, *, few_ok: bool = False) -> None:
        """Per-domain statistics from unlabelled recordings of the new domain (a corpus, a line, a room)."""
        self._set_statistics(recordings, sr, "adapting", "of the domain", "adaptation", few_ok)

    def _set_statistics(self, recordings, sr, doing: str, of_what: str, noun: str, few_ok: bool = False) -> None:
        if self.needs == "nothing":
            warnings.warn(f"{self.path.name} normalises with its training statistics and needs no {noun}: "
                          "the recordings are not used", CalibrationWarning, stacklevel=3)
            return
        recordings = as_recordings(recordings, doing)
        if not recordings:
            raise UsageError(f"{doing} {self.path.name} needs recordings {of_what}, got none")
        wanted = {"calibrate": "calibration", "adapt": "adaptation"}[self.needs]
        if noun != wanted:  # the other kind of recordings: used, and said so
            warnings.warn(f"{self.path.name} normalises per {self._per}: the {noun} recordings are used for its {wanted} "
                          f"(--{self.needs}; {self.needs}() in Python)", CalibrationWarning, stacklevel=3)
        if self.feature in FUNCTIONAL_SETS and len(recordings) < 2:
            raise UsageError(f"{doing} {self.path.name} ({self.feature} functionals, one vector a recording) "
                             f"needs several recordings {of_what}, got {len(recordings)}")
        if not few_ok:
            warn_if_few(len(recordings), f"{doing} {self.path.name}", of_what)
        self._stats = self._group_inputs(self.features(*self._load(r, sr)) for r in recordings)

    def _group_inputs(self, features) -> dict[str, np.ndarray]:
        """The graph's normalisation inputs (statistics, a per-corpus model's whitening matrix) from features."""
        whiten = self.normalizer.get("whiten") if "norm_whiten" in self.input_names else None
        if whiten is None:
            return group_inputs(features)  # streamed: a large folder's features are never all held
        features = list(features)
        frames, dims = sum(f.shape[1] for f in features), features[0].shape[0] if features else 0
        if whiten == "ledoit-wolf" and frames < dims:  # few recordings, many features: a near-null direction's gain
            warnings.warn(f"{self.path.name} whitens (ledoit-wolf) its {dims} features with the domain's own matrix, here "
                          f"from {frames} feature vectors: with fewer than {dims}, directions of no variance are "
                          "amplified and answers can be extreme; give more recordings of the domain",
                          CalibrationWarning, stacklevel=4)
        return group_inputs(features, whiten)

    def _require_statistics(self) -> None:
        if self.needs_calibration:
            what = ("--calibrate DIR, --calibrate 'GLOB' (quoted) or --calibrate FILE repeated (a few recordings of "
                    "the speaker; calibrate() in Python)" if self.needs == "calibrate" else
                    "--adapt DIR (unlabelled recordings of your domain; adapt() in Python)")
            raise UsageError(f"{self.path.name} normalises its features per {self._per} "
                             f"and needs {what}: normalised with its own statistics, every recording would look alike. "
                             "For single recordings of unknown speakers use a model trained with data.normalize: global")

    # -- features ----------------------------------------------------------------------------
    @property
    def frontend(self) -> NumpyFrontEnd:
        if self._frontend is None:
            self._frontend = NumpyFrontEnd(self.feature, self.feature_params, self.sr)
        return self._frontend

    def features(self, wav: np.ndarray, rate: int | None = None) -> np.ndarray:
        """Input features ``(F, T)`` of a mono signal (at ``rate``); an encoder's: a vector a window <= max_seconds."""
        if self.feature in FUNCTIONAL_SETS:
            return functionals(self.feature, wav, int(rate or self.sr), self.feature_params.get("trim_db"))
        if "features" in self.output_names:  # a feature only the graph computes (a pretrained encoder)
            if self.feature_params.get("trim_db") is not None:
                wav = trim_silence(wav, self.sr, self.feature_params["trim_db"])[0]
            n = next(i.shape[0] for i in self.session.get_inputs() if i.name == "norm_mean")
            identity = {k: v for k, v in {"norm_mean": np.zeros(n, np.float32), "norm_std": np.ones(n, np.float32),
                                          "norm_whiten": np.eye(n, dtype=np.float32)}.items() if k in self.input_names}
            feeds = ({"audio": w[None].astype(np.float32), "audio_lengths": np.array([len(w)], np.int64), **identity}
                     for w in self._pieces(wav))  # a vector a window
            return np.concatenate([self.session.run(["features"], feed)[0][0] for feed in feeds], 1)
        return self.frontend(wav)

    def _load(self, item, sr: int | None = None) -> tuple[np.ndarray, int]:
        """``(mono float32 samples, their rate)``: the model's rate, or the item's own for native-rate features."""
        if isinstance(item, (str, os.PathLike)):
            return load_audio_with_rate(item, None if self.native_rate else self.sr)
        if isinstance(item, tuple):
            if len(item) != 2 or not isinstance(item[1], (int, np.integer)):
                raise UsageError("an audio item as a tuple must be (samples, sample_rate), e.g. (y, 22050)")
            item, sr = item
        if sr is None:
            raise UsageError("an audio array needs its sample rate: predict(array, sr=22050) or predict((array, 22050))")
        wav = to_mono(np.asarray(item, dtype=np.float32))
        if wav.ndim != 1 or wav.size == 0:
            raise UsageError(f"audio array must be 1-D (samples,) or 2-D (samples, channels) and non-empty, got shape {wav.shape}")
        if not np.isfinite(wav).all():
            raise UsageError("audio array holds NaN or infinite samples")
        if self.native_rate:
            return wav, int(sr)
        return resample(wav, int(sr), self.sr), self.sr

    # -- prediction --------------------------------------------------------------------------
    def logits(self, wavs: list[np.ndarray], rates: list[int] | None = None) -> np.ndarray:
        """Logits ``(B, C)`` for mono float32 signals at the model's rate (or at ``rates``, native-rate features)."""
        self._require_statistics()
        rates = rates or [self.sr] * len(wavs)
        norm = self._stats if "norm_mean" in self.input_names else {}
        if self.with_features:
            if self.feature_params.get("trim_db") is not None:  # as training did before its encoder
                wavs = [trim_silence(w, self.sr, self.feature_params["trim_db"])[0] for w in wavs]
            n = max(len(w) for w in wavs)
            audio = np.zeros((len(wavs), n), dtype=np.float32)
            for i, w in enumerate(wavs):
                audio[i, : len(w)] = w
            feed = {"audio": audio, "audio_lengths": np.array([len(w) for w in wavs], dtype=np.int64)}
        else:
            feed = pad_features([self.features(w, r) for w, r in zip(wavs, rates)])
        return self.session.run(["logits"], {**feed, **norm})[0]

    def probabilities(self, items, sr: int | None = None) -> np.ndarray:
        """Probabilities ``(B, C)`` for paths, ``(samples, rate)`` tuples or arrays (at ``sr``); a recording longer
        than the model's encoder takes at once (``max_seconds``) gets its windows' mean (``_windowed``)."""
        items = list(items)
        loaded = [self._load(i, sr) for i in items]
        warn_little_sound(loaded, items)
        if self.max_seconds and any(len(w) > self.max_seconds * self.sr for w, _ in loaded):
            return np.stack([self._windowed(w, r) for w, r in loaded])
        return self._softmax(self.logits([w for w, _ in loaded], [r for _, r in loaded]))

    def _windowed(self, wav: np.ndarray, rate: int) -> np.ndarray:
        """One recording's probabilities: the mean over its ``_pieces``."""
        pieces = self._pieces(wav)
        return self._softmax(self.logits(pieces, [rate] * len(pieces))).mean(0)

    def _pieces(self, wav: np.ndarray) -> list[np.ndarray]:
        """``wav`` in equal windows within the encoder's ``max_seconds`` (itself where it fits, or no limit)."""
        n = max(1, -(-len(wav) // int(self.max_seconds * self.sr))) if self.max_seconds else 1
        return np.array_split(wav, n)

    def _softmax(self, logits: np.ndarray) -> np.ndarray:
        return softmax(logits / self.temperature)

    def predict_features(self, features: np.ndarray) -> dict:
        """Probabilities for precomputed features ``(F, T)`` (models exported without features)."""
        if self.with_features:
            raise UsageError("this model takes raw audio (exported --with-features); use predict()")
        self._require_statistics()
        norm = self._stats if "norm_mean" in self.input_names else {}
        return as_dict(self.labels, self._softmax(self.session.run(["logits"], {**pad_features([features]), **norm})[0][0]))

    def window_probabilities(self, item, window_s: float, hop_s: float, sr: int | None = None) -> list[tuple]:
        """``[(start_s, end_s, probabilities)]`` over sliding windows of a recording.

        An uncalibrated per-speaker (or per-corpus) model takes its statistics from the whole recording
        when it lasts at least ``SELF_CALIBRATION_SECONDS`` (warned: one speaker's long recording is its
        own enrollment); a shorter one is refused as ``predict`` would.
        """
        if not window_s > 0 or not hop_s > 0:
            raise UsageError(f"--window and --hop must be positive seconds, got {window_s} and {hop_s}")
        wav, rate = self._load(item, sr)
        if self.needs_calibration and len(wav) >= SELF_CALIBRATION_SECONDS * rate:
            feats = self.features(wav, rate)
            if feats.shape[1] < 3:  # one vector a recording (functionals, an encoder): no statistics of its own
                self._require_statistics()
            warnings.warn(f"{self.path.name} needs per-{self._per} "
                          f"statistics: taking them from the whole {len(wav) / rate:.0f} s recording (give "
                          + ("--calibrate recordings of the speaker" if self.needs == "calibrate" else
                             "--adapt recordings of the domain") + " to use those instead)", CalibrationWarning,
                          stacklevel=2)
            self._stats = self._group_inputs([feats])
            try:
                return self.window_probabilities((wav, rate), window_s, hop_s)
            finally:
                self._stats = None
        win, hop = int(round(window_s * rate)), int(round(hop_s * rate))
        out = []
        for s in window_starts(len(wav), win, hop):
            piece = wav[s:s + win]
            out.append((round(s / rate, 3), round((s + len(piece)) / rate, 3), self._windowed(piece, rate)))
        return out

    def predict_windows(self, item, window_s: float, hop_s: float, sr: int | None = None) -> list[dict]:
        """Sliding windows over a long recording: ``[{start, end, label, probabilities}]`` (seconds)."""
        return window_dicts(self.labels, self.window_probabilities(item, window_s, hop_s, sr))

    def describe(self) -> dict:
        """What a person (or ``GET /model``) wants to know of the model."""
        return {"path": str(self.path), "labels": self.labels, "sample_rate": self.sr, "feature": self.feature,
                "normalize": self.normalizer.get("mode", "none"), "whiten": self.normalizer.get("whiten", "none"),
                "needs": self.needs, "temperature": self.temperature,
                "with_features": self.with_features, "max_seconds": self.max_seconds, "emodet_version": self.version}


def as_recordings(recordings, doing: str = "adapting") -> list:
    """A list of recordings: one path (a file, a folder of audio files or a quoted glob, as the command line
    takes them) or any iterable of paths and arrays (a path string is never read a character at a time)."""
    if isinstance(recordings, (str, os.PathLike)):
        return expand_inputs([str(recordings)], doing, missing_ok=False)
    if isinstance(recordings, np.ndarray) and recordings.ndim == 1 or (
            isinstance(recordings, tuple) and len(recordings) == 2 and isinstance(recordings[1], (int, np.integer))):
        return [recordings]  # one array, or one (samples, rate): a recording, not a list of them
    return list(recordings)


def pad_features(feats: list[np.ndarray]) -> dict:
    """``{"features": (B, F, T_max) zero-padded, "lengths": (B,)}`` for a classifier exported without features."""
    t = max(f.shape[1] for f in feats)
    x = np.zeros((len(feats), feats[0].shape[0], t), dtype=np.float32)
    for i, f in enumerate(feats):
        x[i, :, : f.shape[1]] = f
    return {"features": x, "lengths": np.array([f.shape[1] for f in feats], dtype=np.int64)}
