"""Pretrained speech encoders as backbones: ``states(audio, lengths) -> (hidden states (L+1, B, T, D), lengths)``.

- ``smart-turn-v3.2`` (the offline encoder, ``emodet encoders fetch``) and any transformers Whisper
  checkpoint: emodet's own Whisper modules (any input length, windows of at most the model's span).
  ``smart-turn-v3.2-stem``: its input embedding alone, compressed (``whisper.WhisperStem``; the edge student).
  ``whisper-logmel``: its input, the 80-band log-mel frames (no weights; for a model that trains the stem).
- wav2vec2 / HuBERT / WavLM / data2vec-audio checkpoints (a hub id or a local folder) through
  transformers' ``AutoModel``, with the waveform normalised as the checkpoint's feature extractor says.

``model_info(name)`` says what a model is (family, layers, width) without building it.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from ...core.errors import UsageError
from . import smart_turn
from .whisper import LogMelState, WhisperEncoder, WhisperFrontEnd, WhisperStem

HF_FAMILIES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "whisper")


class WhisperBackbone(nn.Module):
    """Whisper front end + encoder over windows of at most ``window_frames`` log-mel frames: a longer
    recording is cut into equal windows (each within the model's positional span), their states joined."""

    def __init__(self, config: dict, window_frames: int, pad_to_window: bool = False, encoder: nn.Module | None = None):
        super().__init__()
        self.frontend = WhisperFrontEnd(config["n_mels"], do_normalize=config.get("do_normalize", False),
                                        two_stage=encoder is not None)
        self.encoder = encoder if encoder is not None else WhisperEncoder(
            config["n_mels"], config["d_model"], config["layers"], config["heads"], config["ffn"], config["max_positions"])
        self.window = min(int(window_frames), 2 * config["max_positions"])
        self.pad_to_window = pad_to_window
        self.windowed = True  # False in an exported graph: one window, the runtime cuts longer recordings

    def states(self, audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pad_to_window:
            return self._padded_states(audio, lengths)
        mel, frames = self.frontend(audio, lengths)
        if not self.windowed:
            states, out_lengths = self.encoder(mel, frames)
            return states, torch.arange(states.shape[2], device=mel.device)[None, :] < out_lengths[:, None]
        b, n_mels, t = mel.shape
        n_win = (t + self.window - 1) // self.window
        chunk = (t + n_win - 1) // n_win  # equal windows: no window is mostly padding
        mel = nn.functional.pad(mel, (0, n_win * chunk - t))
        windows = mel.reshape(b, n_mels, n_win, chunk).permute(0, 2, 1, 3).reshape(b * n_win, n_mels, chunk)
        starts = torch.arange(n_win, device=mel.device) * chunk
        win_frames = (frames[:, None] - starts[None, :]).clamp(min=0, max=chunk).reshape(-1)
        states, win_lengths = self.encoder(windows, win_frames)  # (L+1, B*W, T', D)
        n_states, _, t_out, dim = states.shape
        states = states.reshape(n_states, b, n_win * t_out, dim)
        valid = torch.arange(t_out, device=mel.device)[None, :] < win_lengths[:, None]  # (B*W, T')
        return states, valid.reshape(b, n_win * t_out)


    def _padded_states(self, audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The way Smart Turn runs its encoder: each recording at the end of a window of zeros (its last
        window's worth, if longer), the whole window normalised and encoded; only the recording's own
        frames are pooled. Costs a full window whatever the recording's length."""
        width = self.window * self.frontend.hop
        b, n = audio.shape
        keep = lengths.clamp(max=width)
        source = lengths[:, None] - keep[:, None] + torch.arange(width, device=audio.device)[None, :] - (width - keep)[:, None]
        inside = source >= lengths[:, None] - keep[:, None]
        padded = torch.gather(audio, 1, source.clamp(0, n - 1)) * inside
        mel, frames = self.frontend(padded, torch.full_like(lengths, width))
        states, out_lengths = self.encoder(mel, frames)
        positions = torch.arange(states.shape[2], device=audio.device)[None, :]
        own = torch.div(self.frontend.frames(keep) + 1, 2, rounding_mode="floor")
        return states, positions >= (out_lengths - own)[:, None]


class HFBackbone(nn.Module):
    """A transformers audio encoder (wav2vec2 family): raw 16 kHz waveform in, all hidden states out."""

    def __init__(self, model: nn.Module, normalize: bool, use_mask: bool):
        super().__init__()
        self.model, self.normalize, self.use_mask = model, normalize, use_mask

    def states(self, audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        valid = torch.arange(audio.shape[-1], device=audio.device)[None, :] < lengths[:, None]
        x = audio * valid
        if self.normalize:  # the checkpoint's feature extractor: zero mean, unit variance per recording
            count = lengths.clamp(min=1).to(x.dtype)[:, None]
            mean = x.sum(-1, keepdim=True) / count
            var = (((x - mean) * valid) ** 2).sum(-1, keepdim=True) / count
            x = (x - mean) / torch.sqrt(var + 1e-7) * valid
        out = self.model(x, attention_mask=valid.long() if self.use_mask else None, output_hidden_states=True)
        states = torch.stack(out.hidden_states)  # (L+1, B, T, D)
        frames = self.model._get_feat_extract_output_lengths(lengths)
        mask = torch.arange(states.shape[2], device=audio.device)[None, :] < frames[:, None]
        return states, mask


@functools.lru_cache(maxsize=8)
def model_info(name: str) -> dict:
    """``{"family", "layers", "dim", "max_seconds", "hash"}`` of an encoder, without loading its weights."""
    if name == smart_turn.LOGMEL_NAME:
        return {"family": "whisper", "layers": 0, "dim": smart_turn.CONFIG["n_mels"],
                "max_seconds": smart_turn.CONFIG["max_positions"] * 2 / 100, "hash": "logmel80-normalised"}
    ranks = smart_turn.stem_ranks(name)
    if name == smart_turn.NAME or ranks:
        config, _ = smart_turn.load_smart_turn()
        return {"family": "whisper", "layers": 0 if ranks else config["layers"], "dim": config["d_model"],
                "max_seconds": config["max_positions"] * 2 / 100,
                "hash": config["sha256"][:16] + ("-stem{}x{}".format(*ranks) if ranks else "")}
    config = _hf_config(name)
    family = config.model_type
    layers = config.encoder_layers if family == "whisper" else config.num_hidden_layers
    dim = config.d_model if family == "whisper" else config.hidden_size
    max_seconds = config.max_source_positions * 2 / 100 if family == "whisper" else None
    return {"family": family, "layers": int(layers), "dim": int(dim), "max_seconds": max_seconds,
            "hash": _hf_hash(name)}


def build_backbone(name: str, window_seconds: float, pad_to_window: bool = False) -> nn.Module:
    """The backbone of encoder ``name`` in eval mode, weights loaded."""
    if name == smart_turn.NAME:
        config, weights = smart_turn.load_smart_turn()
        backbone = WhisperBackbone(config, int(window_seconds * 100), pad_to_window)
        backbone.encoder.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
        return backbone.eval()
    if name == smart_turn.LOGMEL_NAME:
        return WhisperBackbone(smart_turn.CONFIG, int(window_seconds * 100), pad_to_window, encoder=LogMelState()).eval()
    ranks = smart_turn.stem_ranks(name)
    if ranks:
        config, weights = smart_turn.load_smart_turn()
        stem = WhisperStem(weights, ranks, config["max_positions"])
        return WhisperBackbone(config, int(window_seconds * 100), pad_to_window, encoder=stem).eval()
    config = _hf_config(name)
    from transformers import AutoFeatureExtractor, AutoModel

    if config.model_type == "whisper":
        from transformers import WhisperModel

        hf = WhisperModel.from_pretrained(name, local_files_only=_offline(name))
        extractor = AutoFeatureExtractor.from_pretrained(name, local_files_only=_offline(name))
        shape = {"n_mels": config.num_mel_bins, "d_model": config.d_model, "layers": config.encoder_layers,
                 "heads": config.encoder_attention_heads, "ffn": config.encoder_ffn_dim,
                 "max_positions": config.max_source_positions, "do_normalize": bool(getattr(extractor, "do_normalize", False))}
        backbone = WhisperBackbone(shape, int(window_seconds * 100), pad_to_window)
        backbone.encoder.load_state_dict(hf.encoder.state_dict(), strict=False)
        return backbone.eval()
    model = AutoModel.from_pretrained(name, local_files_only=_offline(name))
    try:
        extractor = AutoFeatureExtractor.from_pretrained(name, local_files_only=_offline(name))
        normalize = bool(getattr(extractor, "do_normalize", True))
    except OSError:  # no preprocessor_config.json: the family's usual setting
        normalize = True
    use_mask = getattr(config, "feat_extract_norm", "layer") == "layer"
    return HFBackbone(model, normalize, use_mask).eval()


def _offline(name: str) -> bool:
    return Path(name).is_dir() or os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")


@functools.lru_cache(maxsize=8)
def _hf_config(name: str):
    try:
        from transformers import AutoConfig
    except ImportError:
        raise UsageError(f"encoder {name!r} needs transformers: pip install 'emodet[encoders]' (or pip install "
                         f"transformers); the offline encoder {smart_turn.NAME!r} does not") from None
    try:
        config = AutoConfig.from_pretrained(name, local_files_only=_offline(name))
    except (OSError, ValueError) as exc:
        where = ("a local folder without a config.json" if Path(name).is_dir() else
                 "not a local folder, and the model hub is off (HF_HUB_OFFLINE) or out of reach")
        raise UsageError(f"encoder {name!r}: {where} ({str(exc).splitlines()[0][:160]}); download it where there is "
                         f"a network (huggingface-cli download {name} --local-dir DIR) and pass the folder: "
                         "--set features.params.model=DIR; or use the offline encoder "
                         f"{smart_turn.NAME!r}") from None
    if config.model_type not in HF_FAMILIES:
        raise UsageError(f"encoder {name!r} is a {config.model_type!r} model; emodet reads {', '.join(HF_FAMILIES)}")
    return config


def _hf_hash(name: str) -> str:
    """A content hash of a checkpoint's files (a local folder's, or the hub cache's snapshot of it)."""
    folder = Path(name)
    if not folder.is_dir():  # the weights themselves, fetched now where the hub is reachable (the model needs them)
        from huggingface_hub import snapshot_download

        def snapshot(*patterns):
            return Path(snapshot_download(name, local_files_only=_offline(name), allow_patterns=["*.json", *patterns]))

        folder = snapshot("*.safetensors")
        if not any(folder.glob("*.safetensors")):
            folder = snapshot("*.bin")
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*")):
        if path.is_file() and path.suffix in (".json", ".safetensors", ".bin"):
            digest.update(path.name.encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]
