"""Whisper's log-mel front end and audio encoder as torch modules, at any input length.

Parameter names follow transformers' ``WhisperEncoder`` (``conv1``, ``embed_positions``,
``layers.N.self_attn.q_proj``, ...), so a transformers checkpoint's encoder weights load as they
are; the offline Smart Turn encoder is converted to the same names. Unlike transformers, which
insists on 30 s (or 8 s) of padded input, these take a recording at its own length: the
positional embeddings are sliced to the frames present, and a batch's padding is masked out of
attention, so an item gives the same states alone as padded in a batch.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ...core.filters import mel_filterbank
from ..spectral import Spectrogram


class WhisperFrontEnd(nn.Module):
    """``audio (B, N)``, ``lengths (B,)`` at 16 kHz -> log-mel ``(B, n_mels, N // hop)``, frame counts ``(B,)``.

    transformers' ``WhisperFeatureExtractor`` on each item alone: optional zero-mean unit-variance
    waveform normalisation (``do_normalize``), centred frames with reflect padding, periodic Hann
    window, power spectrum, Slaney mel filters, ``log10`` floored at 1e-10, the last frame dropped,
    values floored 8 below the item's maximum, then ``(x + 4) / 4``.
    """

    def __init__(self, n_mels: int = 80, n_fft: int = 400, hop: int = 160, sr: int = 16000, do_normalize: bool = False,
                 two_stage: bool = False):
        super().__init__()
        self.n_fft, self.hop, self.do_normalize = n_fft, hop, do_normalize
        # two_stage: the DFT in two small matrix stages (~40 KB of constants instead of the 0.6 MB one-stage
        # basis; equal within float rounding), for graphs that must stay small (the edge stem)
        self.spectrogram = Spectrogram(n_fft, hop, n_fft, center=False, method="matmul") if two_stage else None
        # (bins, n_mels): stored as it multiplies, so an exported graph keeps its name (int8 leaves it float)
        self.register_buffer("mel_t", torch.from_numpy(mel_filterbank(sr, n_fft, n_mels, 0.0, sr / 2)).t().contiguous(),
                             persistent=False)
        k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
        n = torch.arange(n_fft, dtype=torch.float64)[None, :]
        basis = torch.cat([torch.cos(2 * math.pi * k * n / n_fft), -torch.sin(2 * math.pi * k * n / n_fft)])
        window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
        # (n_fft, 2 * bins): window and DFT in one matrix, exportable; stored as it multiplies, so an exported
        # graph keeps its name (a transposed view is folded into a constant named "t", which int8 quantised)
        self.register_buffer("dft_t", None if two_stage else (basis * window).t().float().contiguous(), persistent=False)

    def frames(self, lengths: torch.Tensor) -> torch.Tensor:
        return torch.div(lengths, self.hop, rounding_mode="floor")

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = audio.shape[-1]
        valid = torch.arange(n, device=audio.device)[None, :] < lengths[:, None]
        x = audio * valid
        if self.do_normalize:
            count = lengths.clamp(min=1).to(x.dtype)[:, None]
            mean = x.sum(-1, keepdim=True) / count
            centred = (x - mean) * valid
            var = (centred * centred).sum(-1, keepdim=True) / count  # x * x, not ** 2: a Mul in a graph, not a Pow
            x = centred / torch.sqrt(var + 1e-7)
        half = self.n_fft // 2  # reflect padding at each item's own end (a batch's zeros never enter a frame)
        p = torch.arange(-half, n + half, device=x.device)[None, :].expand(x.shape[0], -1)
        last = (lengths - 1)[:, None]
        # reflected at 0 and at the item's last sample (one Where: |2 last - p| = p - 2 last only past 2 last, which
        # no valid frame of an item longer than n_fft / 2 samples reads)
        p = torch.where(p > last, 2 * last - p, p).abs().clamp(0, n - 1)
        x = torch.gather(x, 1, p)
        n_frames = n // self.hop  # the frame centred past the end is dropped, as transformers does
        if self.spectrogram is not None:
            power = self.spectrogram(x)[..., :n_frames].transpose(1, 2)  # (B, T, bins)
        else:
            idx = torch.arange(n_frames, device=x.device)[:, None] * self.hop + torch.arange(self.n_fft, device=x.device)
            spec = torch.matmul(x[:, idx], self.dft_t)  # frames (B, T, n_fft) -> (B, T, 2 * bins)
            bins = self.n_fft // 2 + 1
            power = spec[..., :bins] ** 2 + spec[..., bins:] ** 2
        logmel = torch.log10(torch.clamp(torch.matmul(power, self.mel_t), min=1e-10)).transpose(1, 2)
        count = self.frames(lengths)
        mask = (torch.arange(n_frames, device=x.device)[None, :] < count[:, None])[:, None, :]
        peak = torch.where(mask, logmel, torch.full_like(logmel, -1e4)).amax(dim=(1, 2), keepdim=True)
        logmel = (torch.maximum(logmel, peak - 8.0) + 4.0) / 4.0
        return logmel * mask, count


class WhisperAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (p(x).reshape(b, t, self.heads, self.head_dim).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)  # fp16 too
        out = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class WhisperLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn: int):
        super().__init__()
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.self_attn = WhisperAttention(dim, heads)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn)
        self.fc2 = nn.Linear(ffn, dim)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x), key_mask)
        return x + self.fc2(nn.functional.gelu(self.fc1(self.final_layer_norm(x))))


def fused_gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact GELU written in the order ONNX Runtime fuses into one ``Gelu`` operator (``F.gelu``'s exported form
    stays five operators); equal to ``F.gelu`` within float rounding."""
    return x * (1.0 + torch.erf(x / math.sqrt(2.0))) * 0.5


def embed(conv1: nn.Module, conv2: nn.Module, mel: torch.Tensor, frames: torch.Tensor,
          gelu=nn.functional.gelu) -> tuple[torch.Tensor, torch.Tensor]:
    """The input embedding before positions: ``gelu(conv2(gelu(conv1(mel))))`` ``(B, T', d)`` and its lengths."""
    h = gelu(conv1(mel))
    # a batch's frames past an item's end are gelu(bias), not the zeros the item alone is padded with: zeroed,
    # or conv2's last frame of an odd-length item reads one of them (and attention spreads it to every frame)
    h = h * (torch.arange(h.shape[-1], device=h.device)[None, :] < frames[:, None])[:, None, :]
    return gelu(conv2(h)).transpose(1, 2), torch.div(frames + 1, 2, rounding_mode="floor")


class WhisperEncoder(nn.Module):
    """``mel (B, n_mels, T)``, ``frames (B,)`` -> hidden states ``(L + 1, B, ceil(T / 2), d)`` and their lengths.

    State 0 is the input embedding (convolutions + positions), state i the output of layer i, the
    last one after the final layer norm: transformers' ``output_hidden_states``.
    """

    def __init__(self, n_mels: int = 80, d_model: int = 384, layers: int = 4, heads: int = 6, ffn: int = 1536,
                 max_positions: int = 400):
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, d_model, 3, padding=1)
        self.conv2 = nn.Conv1d(d_model, d_model, 3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(max_positions, d_model)
        self.layers = nn.ModuleList(WhisperLayer(d_model, heads, ffn) for _ in range(layers))
        self.layer_norm = nn.LayerNorm(d_model)
        self.max_positions = max_positions

    def forward(self, mel: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, lengths = embed(self.conv1, self.conv2, mel, frames)
        mask = torch.arange(h.shape[1], device=h.device)[None, :] < lengths[:, None]
        h = h + self.embed_positions.weight[: h.shape[1]]
        states = [h]
        for i, layer in enumerate(self.layers):
            h = layer(h, mask)
            states.append(self.layer_norm(h) if i == len(self.layers) - 1 else h)
        return torch.stack(states), lengths


class Positions(nn.Module):
    """Whisper's sinusoidal positional embeddings ``(length, dim)`` for lengths up to ``max_positions``, from two
    small tables by the angle-addition formulas (position ``t = step a + b``): 16 x fewer sines than a table, and
    no ``Sin`` / ``Cos`` in a graph (ONNX Runtime's cost 2 ns an element). The offline encoder's stored table
    equals them within 3e-5 (its int8 steps)."""

    def __init__(self, dim: int, max_positions: int, step: int = 16):
        super().__init__()
        inv = torch.exp(torch.arange(dim // 2, dtype=torch.float64) * (-math.log(10000.0) / (dim // 2 - 1)))
        coarse = torch.arange(0, max_positions + step, step, dtype=torch.float64)[:, None] * inv
        fine = torch.arange(step, dtype=torch.float64)[:, None] * inv
        for name, angle in (("coarse", coarse), ("fine", fine)):
            self.register_buffer(f"{name}_sin", torch.sin(angle).float(), persistent=False)
            self.register_buffer(f"{name}_cos", torch.cos(angle).float(), persistent=False)
        self.step = step

    def forward(self, length: int) -> torch.Tensor:
        return self.at(torch.arange(length, device=self.fine_sin.device))

    def at(self, t: torch.Tensor) -> torch.Tensor:
        """The embeddings of positions ``t`` (each below ``max_positions`` + ``step``)."""
        a, b = torch.div(t, self.step, rounding_mode="floor"), t % self.step
        sa, ca, sb, cb = self.coarse_sin[a], self.coarse_cos[a], self.fine_sin[b], self.fine_cos[b]
        return torch.cat([sa * cb + ca * sb, ca * cb - sa * sb], 1)


class LowRankConv1d(nn.Sequential):
    """A convolution's weight ``(out, in, k)`` factored by truncated SVD, ``W ~ U_r S_r V_r^T``: a rank-``r``
    convolution without bias (``S_r^1/2 V_r^T``), then a 1x1 convolution to ``out`` channels (``U_r S_r^1/2``)
    with the original bias. Parameters ``r (in k + out)`` instead of ``out in k``."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, rank: int, stride: int = 1, padding: int = 0):
        out_ch, in_ch, k = weight.shape
        rank = min(rank, out_ch, in_ch * k)  # a rank past that is the full convolution, exactly
        u, s, vh = torch.linalg.svd(weight.reshape(out_ch, -1).double(), full_matrices=False)
        root = s[:rank].sqrt()
        down = nn.Conv1d(in_ch, rank, k, stride=stride, padding=padding, bias=False)
        up = nn.Conv1d(rank, out_ch, 1)
        with torch.no_grad():
            down.weight.copy_((root[:, None] * vh[:rank]).reshape(rank, in_ch, k).float())
            up.weight.copy_((u[:, :rank] * root[None, :])[:, :, None].float())
            up.bias.copy_(bias.float())
        super().__init__(down, up)


class LogMelState(nn.Module):
    """The log-mel itself as the one state ``(1, B, T, n_mels)``: a backbone of Whisper's front end alone."""

    def forward(self, mel: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return mel.transpose(1, 2)[None], frames


class WhisperStem(nn.Module):
    """A Whisper encoder's input embedding alone (hidden state 0: the two convolutions and the positions),
    each convolution factored to ``ranks`` by truncated SVD (no data involved) and the positions computed:
    a pretrained front end small enough for a device (the edge student). Same interface as
    ``WhisperEncoder``, one state ``(1, B, T', d)``."""

    def __init__(self, weights: dict, ranks: tuple[int, int], max_positions: int = 400):
        super().__init__()
        w = {k: torch.as_tensor(weights[k]) for k in ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias")}
        self.conv1 = LowRankConv1d(w["conv1.weight"], w["conv1.bias"], ranks[0], padding=1)
        self.conv2 = LowRankConv1d(w["conv2.weight"], w["conv2.bias"], ranks[1], stride=2, padding=1)
        self.positions = Positions(int(w["conv2.weight"].shape[0]), max_positions)

    def forward(self, mel: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, lengths = embed(self.conv1, self.conv2, mel, frames, fused_gelu)
        return (h + self.positions(h.shape[1]).to(h.dtype))[None], lengths
