"""``encoder_stem``: the offline encoder's input embedding (its two convolutions), factored and fine-tuned.

The edge student's pretrained front end trained end to end: over Whisper's log-mel frames
(``features: {type: encoder, params: {model: whisper-logmel, layers: [0], pooling: none}}``), the
Smart Turn encoder's convolutions factored by truncated SVD to ``ranks`` (as ``smart-turn-v3.2-stem``
does), its positions added, the frames pooled to mean and standard deviation, a batch normalisation
without parameters (training statistics: what ``data.normalize: global`` does for a pooled feature),
and a linear classifier. At initialisation its pooled means are the ``smart-turn-v3.2-stem`` feature's and
its standard deviations too within 5e-4 (floored at 1e-5 of variance, the feature at 1e-8; tested);
training moves the convolutions at ``encoder_lr_scale`` times the head's rate. The exported graph holds
the log-mel front end, the convolutions and the head (~0.9 MB float32 at ranks 64 x 96).

A recording longer than the encoder's 8 s: in training (and a run's own evaluation) the convolutions
run over the whole recording, its front end normalised over the whole of it, and the positions start
again every 8 s; the runtime cuts it into pieces of at most 8 s, each normalised alone, and averages
their probabilities (as for every encoder model: ``encoder_top``'s and the stem feature's pooled
windows differ from the runtime the same way). Corpora of short utterances hardly meet it (EmoDB's
longest recording is under 9 s).
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.errors import UsageError
from .common import full_lengths, length_mask, masked_mean_std
from .registry import register_model


def check_features(features_type: str, features_params: dict, model_params: dict) -> None:
    """Refuse, before any file is read, features that are not the offline encoder's log-mel frames, ranks that are
    not two whole numbers within the convolutions' full ranks, and an offline encoder not yet fetched."""
    from ..features.encoders import smart_turn
    from ..features.encoders.feature import ENCODER_DEFAULTS

    params = {**ENCODER_DEFAULTS, **features_params}
    want = (f"features.type: encoder with params {{model: {smart_turn.LOGMEL_NAME}, layers: [0], pooling: none, "
            "pad_to_window: false}")
    if features_type != "encoder" or params["model"] != smart_turn.LOGMEL_NAME or params["pooling"] != "none" \
            or params["layers"] not in ([0], [-1], 0, -1, "all") or params["pad_to_window"]:
        raise UsageError(f"model encoder_stem trains the offline encoder's convolutions over its log-mel input: it "
                         f"needs {want}, got features.type {features_type!r} with model {params['model']!r}, "
                         f"layers {params['layers']!r}, pooling {params['pooling']!r}, pad_to_window "
                         f"{params['pad_to_window']!r}")
    ranks = model_params.get("ranks", list(smart_turn.STEM_RANKS))
    if not (isinstance(ranks, (list, tuple)) and len(ranks) == 2
            and all(isinstance(r, int) and not isinstance(r, bool) for r in ranks)):
        raise UsageError(f"model.params.ranks of encoder_stem must be two whole numbers [R, S], got {ranks!r}")
    try:
        smart_turn.stem_ranks(f"{smart_turn.STEM_NAME}-{ranks[0]}x{ranks[1]}")  # refuses ranks past the full ones
    except UsageError:
        raise UsageError(f"model.params.ranks {list(ranks)} of encoder_stem: ranks 1 to 240 and 1 to 384 (the "
                         "convolutions' full ranks), e.g. [64, 96]") from None
    if not smart_turn.is_fetched():
        smart_turn.load_smart_turn()  # says how to fetch it


@register_model("encoder_stem", presets={"base": {}, "tiny": {"ranks": [48, 64]}}, check=check_features,
                normalize=("none",))
class EncoderStem(nn.Module):
    """``(B, 80, T)`` Whisper log-mel -> the offline encoder's factored convolutions (fine-tuned) -> mean + std -> logits."""

    def __init__(self, n_classes: int, n_features: int, ranks: tuple[int, int] | list[int] = (64, 96),
                 dropout: float = 0.0, encoder_lr_scale: float = 0.1):
        super().__init__()
        from ..features.encoders import smart_turn
        from ..features.encoders.whisper import WhisperStem

        if n_features != smart_turn.CONFIG["n_mels"]:
            raise ValueError(f"{n_features} features a frame, but the encoder takes {smart_turn.CONFIG['n_mels']} "
                             f"log-mel bands (features.params.model: {smart_turn.LOGMEL_NAME})")
        if not encoder_lr_scale >= 0:
            raise ValueError(f"encoder_lr_scale {encoder_lr_scale}: a factor of the head's learning rate, 0 or more "
                             "(0 keeps the pretrained convolutions frozen)")
        rank_pair = smart_turn.stem_ranks(f"{smart_turn.STEM_NAME}-{int(ranks[0])}x{int(ranks[1])}")
        config, weights = smart_turn.load_smart_turn()
        self.stem = WhisperStem(weights, rank_pair, config["max_positions"])
        self.max_positions = int(config["max_positions"])
        width = int(config["d_model"])
        self.norm = nn.BatchNorm1d(2 * width, affine=False)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * width, n_classes)
        self.encoder_lr_scale = float(encoder_lr_scale)

    def frames(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The input embedding ``(B, T', D)`` (``smart-turn-v3.2-stem``'s state 0) and its valid-frame mask."""
        from ..features.encoders.whisper import embed, fused_gelu

        h, out_lengths = embed(self.stem.conv1, self.stem.conv2, x, full_lengths(x, lengths), fused_gelu)
        t = torch.arange(h.shape[1], device=x.device) % self.max_positions
        return h + self.stem.positions.at(t).to(h.dtype), length_mask(out_lengths, h.shape[1])

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        h, mask = self.frames(x, lengths)
        pooled = masked_mean_std(h, mask, frames_dim=1)  # frames in rows, as the stem feature pools them
        if self.training and pooled.shape[0] == 1:  # a batch of one has no statistics: the running ones
            pooled = nn.functional.batch_norm(pooled, self.norm.running_mean, self.norm.running_var, eps=self.norm.eps)
        else:
            pooled = self.norm(pooled)
        return self.head(self.dropout(pooled))

    def param_groups(self, lr: float) -> list[dict]:
        """The head at ``lr`` (first: the rate a run's history shows), the convolutions at ``encoder_lr_scale * lr``."""
        return [{"params": list(self.head.parameters()), "lr": lr},
                {"params": list(self.stem.parameters()), "lr": lr * self.encoder_lr_scale}]
