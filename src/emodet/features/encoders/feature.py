"""The ``encoder`` feature: a pretrained speech encoder's hidden states, pooled over the recording.

    features: {type: encoder, params: {model: smart-turn-v3.2, layers: [2], pooling: meanstd}}

The cache stores every layer's pooled states (``(L + 1) * 2 * D`` values a recording for
``meanstd``), so a sweep over ``layers`` computes nothing again; ``pooling: none`` keeps the
frame-level states ``((L + 1) * D, frames)`` for heads that pool themselves. Parameters:

- ``model``: ``smart-turn-v3.2`` (offline, ``emodet encoders fetch``), a hub id or a local folder of a
  wav2vec2 / HuBERT / WavLM / data2vec-audio / Whisper checkpoint; ``smart-turn-v3.2-stem`` (or ``-RxS``:
  the offline encoder's input embedding alone, factored) or ``whisper-logmel`` (its 80-band log-mel input);
- ``layers``: ``all`` or a list of hidden-state indices (0 = the input embedding, -1 = the last);
- ``pooling``: ``meanstd``, ``mean`` or ``none``;
- ``window_seconds``: longest window the encoder sees (Whisper models: at most their span, 8 s for
  Smart Turn); longer recordings are cut into equal windows whose states are pooled together;
- ``pad_to_window``: Whisper models only: each recording at the end of a full window of zeros, as Smart
  Turn was trained (costs the whole window whatever the recording's length; default: its own length);
- ``trim_db``: leading and trailing silence (frames this many dB below the loudest) dropped first, as
  for openSMILE functionals (``emodet.core.audio.trim_silence``; the runtime trims the same way);
- ``dtype``: ``float32``, or ``float16`` / ``bfloat16`` on a GPU.
"""

from __future__ import annotations

import functools
import threading

import numpy as np
import torch
from torch import nn

from ...core.errors import UsageError

ENCODER_DEFAULTS = {"model": "smart-turn-v3.2", "layers": "all", "pooling": "meanstd", "window_seconds": 8.0,
                    "pad_to_window": False, "trim_db": None, "dtype": "float32"}
POOLINGS = ("meanstd", "mean", "none")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class EncoderFeatures(nn.Module):
    """``audio (B, N)``, ``lengths (B,)`` at 16 kHz -> ``(features (B, F, T), lengths (B,))``: the chosen layers'
    states pooled over each recording's valid frames (``T = 1``), or the frames themselves (``pooling: none``)."""

    takes_lengths = True  # the deployed graph passes the samples' lengths, and gets the features' back
    max_seconds: float | None = None  # an exported graph's longest input (Whisper: its window)

    def __init__(self, backbone: nn.Module, pooling: str, layers: list[int] | None):
        super().__init__()
        self.backbone, self.pooling = backbone, pooling
        self.register_buffer("layers", torch.tensor(layers if layers is not None else [], dtype=torch.long),
                             persistent=False)
        self.all_layers = layers is None

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        states, valid = self.backbone.states(audio, lengths)  # (L+1, B, T, D), (B, T)
        if not self.all_layers:
            states = states.index_select(0, self.layers)
        n_states, b, t, d = states.shape
        if self.pooling == "none":
            frames = states.permute(1, 0, 3, 2).reshape(b, n_states * d, t)
            return frames * valid[:, None, :], valid.sum(1)
        m = valid[None, :, :, None].to(states.dtype)
        count = m.sum(2).clamp(min=1.0)
        mean = (states * m).sum(2) / count  # (L+1, B, D)
        pooled = [mean]
        if self.pooling == "meanstd":
            centred = states - mean[:, :, None]  # squared as x * x (a graph's Mul; ONNX Runtime's Pow is slower)
            pooled.append(torch.sqrt((centred * centred * m).sum(2) / count + 1e-8))
        out = torch.stack(pooled, 2).permute(1, 0, 2, 3).reshape(b, -1, 1)  # layer-major: mean, std of each
        return out, torch.ones(b, dtype=torch.long, device=audio.device)


def check_params(params: dict) -> None:
    """Refuse what cannot work before any file is read."""
    from .backbones import model_info

    if params["pooling"] not in POOLINGS:
        raise UsageError(f"feature parameter 'pooling' must be one of {', '.join(POOLINGS)}, got {params['pooling']!r}")
    if params["dtype"] not in DTYPES:
        raise UsageError(f"feature parameter 'dtype' must be one of {', '.join(DTYPES)}, got {params['dtype']!r}")
    seconds = params["window_seconds"]
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0.5:
        raise UsageError(f"feature parameter 'window_seconds' must be a number of seconds above 0.5, got {seconds!r}")
    from ...core.smile import check_functional_params

    check_functional_params({"trim_db": params["trim_db"]})
    info = model_info(str(params["model"]))
    if params["pad_to_window"] not in (True, False) or (params["pad_to_window"] and info["family"] != "whisper"):
        raise UsageError(f"feature parameter 'pad_to_window' must be true or false (true for Whisper models only), "
                         f"got {params['pad_to_window']!r} for a {info['family']} model")
    from .smart_turn import LOGMEL_NAME

    if params["pad_to_window"] and str(params["model"]) == LOGMEL_NAME:
        raise UsageError("feature parameter 'pad_to_window': whisper-logmel is the encoder's input, not an encoder; "
                         "set pad_to_window: false")
    if params["pad_to_window"] and params["pooling"] == "none":
        raise UsageError("feature parameter 'pad_to_window': true pools the recording's own frames inside a padded "
                         "window; it does not keep frames (pooling: none): set pooling meanstd or mean, or "
                         "pad_to_window: false")
    if info["max_seconds"] and seconds > info["max_seconds"]:
        raise UsageError(f"feature parameter 'window_seconds' {seconds} is longer than encoder {params['model']!r} "
                         f"sees at once ({info['max_seconds']:g} s); give at most that")
    layer_indices(params, info["layers"] + 1)


def layer_indices(params: dict, n_states: int) -> list[int] | None:
    """The hidden-state indices ``params["layers"]`` asks for (``None``: all), each checked."""
    layers = params["layers"]
    if layers == "all":
        return None
    if isinstance(layers, int) and not isinstance(layers, bool):
        layers = [layers]
    if not isinstance(layers, list) or not layers or not all(isinstance(i, int) and not isinstance(i, bool)
                                                              for i in layers):
        raise UsageError(f"feature parameter 'layers' must be 'all' or a list of hidden-state indices, got {layers!r}")
    bad = [i for i in layers if not -n_states <= i < n_states]
    if bad:
        raise UsageError(f"feature parameter 'layers': {bad[0]} is not a hidden state of this encoder (0 to "
                         f"{n_states - 1}: 0 the input embedding, {n_states - 1} the last layer; -1 counts from the end)")
    return [i % n_states for i in layers]


def view(features: np.ndarray, params: dict) -> np.ndarray:
    """The chosen layers' rows of the cached states of every layer."""
    from .backbones import model_info

    n_states = model_info(str(params["model"]))["layers"] + 1
    chosen = layer_indices(params, n_states)
    if chosen is None:
        return features
    return features.reshape(n_states, -1, features.shape[-1])[chosen].reshape(-1, features.shape[-1])


def identity(params: dict) -> dict:
    """The model's content hash: two checkpoints of one name never share cache entries; for Whisper models
    also the version of emodet's encoder code (2: states no longer depend on the batch an item is in)."""
    from .backbones import model_info

    info = model_info(str(params["model"]))
    return {"model_hash": info["hash"], **({"whisper_code": 2} if info["family"] == "whisper" else {})}


_LOCK = threading.Lock()


@functools.lru_cache(maxsize=4)
def _extractor(model: str, pooling: str, window_seconds: float, pad: bool, dtype: str) -> tuple[EncoderFeatures, torch.device]:
    from .backbones import build_backbone

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dtype != "float32" and device.type != "cuda":
        raise UsageError(f"feature parameter 'dtype' {dtype}: half precision is for GPUs; this machine has none "
                         "(use float32)")
    module = EncoderFeatures(build_backbone(model, window_seconds, pad), pooling, None).eval()
    return module.to(device=device, dtype=DTYPES[dtype]), device


def compute_batch(wavs: list[np.ndarray], sr: int, params: dict) -> list[np.ndarray]:
    """All layers' pooled states (or frames) of each recording (16 kHz mono), batched with padding."""
    if sr != 16000:
        raise UsageError(f"encoder features need 16 kHz audio (data.sample_rate: 16000), got {sr}")
    if params["trim_db"] is not None:
        from ...core.audio import trim_silence

        wavs = [trim_silence(w, sr, params["trim_db"])[0] for w in wavs]
    with _LOCK:
        module, device = _extractor(str(params["model"]), params["pooling"], float(params["window_seconds"]),
                                    bool(params["pad_to_window"]), params["dtype"])
    window = getattr(module.backbone, "window", None)  # Whisper: a recording past one window is cut into windows
    hop = module.backbone.frontend.hop if window else 0
    if window and not params["pad_to_window"] and len(wavs) > 1 and any(len(w) // hop > window for w in wavs):
        # the windows follow the batch's longest item: a long recording is encoded alone, so its states never
        # depend on the batch it is in
        short = [i for i, w in enumerate(wavs) if len(w) // hop <= window]
        out = dict(zip(short, _encode([wavs[i] for i in short], module, device, params["dtype"]) if short else []))
        out.update((i, _encode([w], module, device, params["dtype"])[0]) for i, w in enumerate(wavs) if i not in out)
        return [out[i] for i in range(len(wavs))]
    return _encode(wavs, module, device, params["dtype"])


def _encode(wavs: list[np.ndarray], module: EncoderFeatures, device: torch.device, dtype: str) -> list[np.ndarray]:
    lengths = torch.tensor([len(w) for w in wavs])
    audio = torch.zeros(len(wavs), int(lengths.max()))
    for i, w in enumerate(wavs):
        audio[i, : len(w)] = torch.from_numpy(np.asarray(w, dtype=np.float32))
    with torch.inference_mode():
        feats, frames = module(audio.to(device, DTYPES[dtype]), lengths.to(device))
    feats = feats.float().cpu().numpy()
    return [feats[i][:, : max(1, int(frames[i]))] for i in range(len(wavs))]


def compute_one(wav: np.ndarray, sr: int, params: dict) -> np.ndarray:
    return compute_batch([wav], sr, params)[0]


def build_module(sr: int, params: dict) -> EncoderFeatures:
    """The feature as a module for an exported graph: the run's layers only, float32, on the CPU, one window
    (at most ``window_seconds``; the runtime cuts a longer recording into windows, see ``max_seconds``)."""
    from .backbones import build_backbone, model_info

    chosen = layer_indices(params, model_info(str(params["model"]))["layers"] + 1)
    backbone = build_backbone(str(params["model"]), float(params["window_seconds"]), bool(params["pad_to_window"]))
    module = EncoderFeatures(backbone, params["pooling"], chosen).eval()
    if hasattr(backbone, "windowed"):  # Whisper models: one window a pass
        backbone.windowed = False
        module.max_seconds = min(float(params["window_seconds"]), backbone.window / 100)
    return module
