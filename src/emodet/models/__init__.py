"""Model registry and families: ``fc``, ``cnn``, ``resnet``, ``lstm``, ``crnn`` (each with a ``tiny`` preset), and
``layer_sum`` (a head over pretrained encoder states), ``dscnn`` (the edge student), ``encoder_top`` (a
pretrained encoder's top layers, fine-tuned), ``encoder_stem`` (its input convolutions, factored and fine-tuned)."""

from .registry import (_MODEL_REGISTRY, build_model, check_model_features, count_parameters, get_model_entry,
                       list_models, register_model)
from . import fc, cnn, resnet, lstm, crnn, layer_sum, dscnn, encoder_top, encoder_stem  # noqa: F401,E402  (register the families)

__all__ = ["_MODEL_REGISTRY", "build_model", "check_model_features", "count_parameters", "get_model_entry", "list_models",
           "register_model"]
