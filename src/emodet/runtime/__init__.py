"""Torch-free inference on ONNX Runtime (imports numpy, soundfile, soxr and onnxruntime only)."""

from .frontend import NumpyFrontEnd
from .predictor import EmotionPredictor, FusedPredictor, smooth_segments

__all__ = ["EmotionPredictor", "FusedPredictor", "NumpyFrontEnd", "smooth_segments"]
