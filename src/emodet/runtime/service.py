"""What ``emodet predict``, ``emodet serve`` and its workers share: opening a predictor from model files
and calibration recordings, and the JSON record of one recording's prediction."""

from __future__ import annotations

from .fused import FusedPredictor
from .outputs import top_label
from .predictor import EmotionPredictor
from .segments import smooth_segments


def open_predictor(models: list[str], weights: list[float] | None = None, calibrate: list[str] = (),
                   adapt: list[str] = ()):
    """An ``EmotionPredictor`` for one model, a ``FusedPredictor`` for several (``weights`` one a model),
    calibrated on ``calibrate`` (recordings of the speaker) and adapted on ``adapt`` (of the domain)."""
    predictor = FusedPredictor(models, weights) if len(models) > 1 else EmotionPredictor(models[0])
    if calibrate:
        predictor.calibrate(list(calibrate))
    if adapt:
        predictor.adapt(list(adapt))
    return predictor


def prediction_record(predictor, item, name: str, window_s: float | None = None, hop_s: float | None = None,
                      min_confidence: float = 0.0, sr: int | None = None) -> dict:
    """What ``emodet predict --json`` prints for one recording (and ``POST /predict`` answers):
    ``{file, label, probabilities}``, or with ``window_s`` ``{file, windows: [{start, end, label,
    probabilities}], segments: [{start, end, label, confidence}]}``; a label is ``"uncertain"`` where its
    probability is below ``min_confidence``. ``item`` is a path, ``(samples, rate)`` or samples at ``sr``."""
    if window_s is not None:
        windows = [{**w, "label": top_label(w["probabilities"], min_confidence)}
                   for w in predictor.predict_windows(item, window_s, hop_s or window_s / 2, sr)]
        return {"file": name, "windows": windows, "segments": smooth_segments(windows)}
    probs = predictor.predict(item, sr)
    return {"file": name, "label": top_label(probs, min_confidence), "probabilities": probs}
