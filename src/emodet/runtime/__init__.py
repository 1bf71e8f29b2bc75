"""Torch-free inference on ONNX Runtime (imports numpy, soundfile, soxr and onnxruntime only)."""

from .frontend import NumpyFrontEnd
from .fused import FusedPredictor
from .predictor import EmotionPredictor
from .segments import smooth_segments

__all__ = ["EmotionPredictor", "FusedPredictor", "NumpyFrontEnd", "smooth_segments"]
