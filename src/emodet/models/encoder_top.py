"""``encoder_top``: a pretrained Whisper encoder's top layers, fine-tuned, over one of its cached hidden states.

Partial fine-tuning without running the frozen part again: the feature cache holds the encoder's
frame-level hidden state ``from_layer`` (``features: {type: encoder, params: {layers: [K], pooling:
none}}``), and this model starts from copies of the encoder's own layers ``K+1 .. K+layers`` (and its
final layer norm when the last layer is among them), with their pretrained weights, then pools the
recording's frames (mean and standard deviation) into a linear classifier. At initialisation its
frames are exactly the encoder's hidden state ``K + layers`` (tested); training moves the copied
layers at ``encoder_lr_scale`` times the head's learning rate (``training.lr``).

Whisper-family encoders (the offline ``smart-turn-v3.2`` and transformers Whisper checkpoints). The
exported graph runs the frozen encoder (the features) and then these layers, so the runtime needs
nothing else. A recording longer than ``window_seconds`` (8 s) is encoded in windows: in training the
copied layers attend over the joined windows' frames, while the runtime predicts each window and
averages the probabilities (as for every encoder model).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..core.errors import UsageError
from .common import full_lengths, length_mask, masked_mean, masked_mean_std
from .registry import register_model


def check_features(features_type: str, features_params: dict, model_params: dict) -> None:
    """Refuse, before any file is read, a feature that is not the hidden state these layers continue, an
    encoder that is not a Whisper one, and layers the encoder does not have."""
    from ..features.encoders.backbones import model_info
    from ..features.encoders.feature import ENCODER_DEFAULTS, layer_indices

    params = {**ENCODER_DEFAULTS, **features_params}
    from_layer, layers = model_params.get("from_layer", 2), model_params.get("layers", 1)
    for key, value in (("from_layer", from_layer), ("layers", layers)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"model.params.{key} of encoder_top must be a whole number, got {value!r}")
    want = f"features.type: encoder with params {{layers: [{from_layer}], pooling: none}}"
    if features_type != "encoder":
        raise UsageError(f"model encoder_top continues a pretrained encoder's layers: it needs {want}, "
                         f"got features.type {features_type!r}")
    encoder = model_params.get("encoder", "smart-turn-v3.2")
    if model_info(str(params["model"]))["layers"] == 0:  # a stem: say so before any advice on model.params.encoder
        check_layers(from_layer, layers, 0, str(params["model"]))
    if encoder != params["model"]:
        raise UsageError(f"model encoder_top's encoder {encoder!r} is not the features' encoder {params['model']!r}: "
                         "set model.params.encoder to the same")
    info = model_info(str(encoder))
    if info["family"] != "whisper":
        raise UsageError(f"model encoder_top fine-tunes Whisper encoder layers; {encoder!r} is a {info['family']} "
                         "model (use model layer_sum over its pooled or frame-level states)")
    check_layers(from_layer, layers, info["layers"], encoder)
    chosen = layer_indices(params, info["layers"] + 1) if params["layers"] != "all" else None
    if params["pooling"] != "none" or chosen != [from_layer]:
        raise UsageError(f"model encoder_top (model.params.from_layer {from_layer}) needs {want}, got layers "
                         f"{params['layers']!r} and pooling {params['pooling']!r}")
    if params["pad_to_window"]:
        raise UsageError("model encoder_top needs the recording's own frames: set features.params.pad_to_window: false")


def check_layers(from_layer: int, layers: int, n_layers: int, encoder: str) -> None:
    from ..features.encoders import smart_turn

    if layers < 1:
        raise UsageError(f"model encoder_top: layers {layers}: fine-tune at least 1 layer")
    if n_layers == 0:
        what = ("the log-mel input alone (model encoder_stem trains the encoder's input convolutions over it)"
                if encoder == smart_turn.LOGMEL_NAME else "an input embedding alone (no layers above state 0)")
        raise UsageError(f"model encoder_top fine-tunes an encoder's layers; {encoder!r} is {what}: use the full "
                         "encoder (smart-turn-v3.2) or a linear / fc head")
    if not 0 <= from_layer < n_layers or from_layer + layers > n_layers:
        raise UsageError(f"model encoder_top: from_layer {from_layer} and layers {layers}, but encoder {encoder!r} has "
                         f"layers 1 to {n_layers} above its input embedding (state 0): from_layer from 0 to "
                         f"{n_layers - 1}, and from_layer + layers at most {n_layers}")


@register_model("encoder_top", presets={"base": {}, "tiny": {}}, check=check_features)
class EncoderTop(nn.Module):
    """``(B, D, T)`` hidden state ``from_layer`` -> the encoder's next ``layers`` layers (fine-tuned) -> pooled -> logits."""

    def __init__(self, n_classes: int, n_features: int, encoder: str = "smart-turn-v3.2", from_layer: int = 2,
                 layers: int = 1, pooling: str = "meanstd", dropout: float = 0.1, encoder_lr_scale: float = 0.05):
        super().__init__()
        from ..features.encoders.backbones import build_backbone

        backbone = build_backbone(str(encoder), 8.0)
        source = getattr(backbone, "encoder", None)
        if source is None or not hasattr(source, "layer_norm"):
            raise ValueError(f"encoder {encoder!r} is not a Whisper-family encoder; encoder_top fine-tunes Whisper "
                             "layers (for other families use model layer_sum over pooled or frame-level states)")
        n_layers, width = len(source.layers), source.layer_norm.normalized_shape[0]
        check_layers(from_layer, layers, n_layers, str(encoder))
        if not encoder_lr_scale >= 0:
            raise ValueError(f"encoder_lr_scale {encoder_lr_scale}: a factor of the head's learning rate, 0 or more "
                             "(0 keeps the pretrained layers frozen)")
        if n_features != width:
            raise ValueError(f"{n_features} features a frame, but encoder {encoder!r} has {width}: feed it one hidden "
                             f"state (features.params.layers: [{from_layer}], pooling: none)")
        if pooling not in ("meanstd", "mean"):
            raise ValueError(f"pooling must be meanstd or mean, got {pooling!r}")
        self.layers = nn.ModuleList(copy.deepcopy(source.layers[from_layer + i]) for i in range(layers))
        self.final_norm = copy.deepcopy(source.layer_norm) if from_layer + layers == n_layers else nn.Identity()
        self.pooling, self.encoder_lr_scale = pooling, float(encoder_lr_scale)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width * (2 if pooling == "meanstd" else 1), n_classes)

    def frames(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The copied layers' output ``(B, T, D)`` and the valid-frame mask ``(B, T)``."""
        mask = length_mask(full_lengths(x, lengths), x.shape[-1])
        h = x.transpose(1, 2)
        for layer in self.layers:
            h = layer(h, mask)
        return self.final_norm(h), mask

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        h, mask = self.frames(x, lengths)
        pool = masked_mean_std if self.pooling == "meanstd" else masked_mean
        return self.head(self.dropout(pool(h.transpose(1, 2), mask)))

    def param_groups(self, lr: float) -> list[dict]:
        """The new head at ``lr`` (first: the learning rate a run's history shows), the pretrained layers at
        ``encoder_lr_scale * lr``."""
        pretrained = list(self.layers.parameters()) + list(self.final_norm.parameters())
        return [{"params": list(self.head.parameters()), "lr": lr}, {"params": pretrained, "lr": lr * self.encoder_lr_scale}]
