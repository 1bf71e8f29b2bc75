"""Pretrained speech encoders as a feature family (``features.type: encoder``); see ``feature.py``."""

from ..registry import register_feature
from . import feature
from .feature import ENCODER_DEFAULTS, EncoderFeatures

register_feature("encoder", defaults=ENCODER_DEFAULTS, module_factory=feature.build_module,
                 check_params=feature.check_params, view=feature.view, view_keys=("layers",),
                 identity=feature.identity, batch_fn=feature.compute_batch, graph_only=True,
                 description="a pretrained speech encoder's hidden states pooled over the recording "
                             "(smart-turn-v3.2 offline, or a wav2vec2/HuBERT/WavLM/data2vec/Whisper checkpoint)")(feature.compute_one)

__all__ = ["ENCODER_DEFAULTS", "EncoderFeatures"]
