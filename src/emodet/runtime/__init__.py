"""Torch-free inference on ONNX Runtime (imports numpy, soundfile, soxr and onnxruntime only)."""

from .frontend import NumpyFrontEnd
from .predictor import EmotionPredictor, smooth_segments

__all__ = ["EmotionPredictor", "NumpyFrontEnd", "smooth_segments"]
