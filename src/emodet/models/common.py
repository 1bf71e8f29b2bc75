"""Building blocks shared by the model families; every operation exports to ONNX."""

from __future__ import annotations

import torch
from torch import nn


def full_lengths(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """``lengths`` or, when ``None``, the full time length of every item of ``x (B, ..., T)``."""
    if lengths is None:
        return torch.full((x.shape[0],), x.shape[-1], dtype=torch.long, device=x.device)
    return lengths.to(torch.long)


def length_mask(lengths: torch.Tensor, t: int) -> torch.Tensor:
    """``(B, T)`` bool, True on valid frames."""
    return torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]


def conv_lengths(lengths: torch.Tensor, stride: int) -> torch.Tensor:
    """Frames left after a 'same'-padded convolution or pooling of ``stride`` (ceil division)."""
    return torch.div(lengths - 1, stride, rounding_mode="floor") + 1


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x (B, C, T)``, ``mask (B, T)`` -> ``(B, C)`` mean over valid frames."""
    m = mask[:, None, :].to(x.dtype)
    return (x * m).sum(-1) / m.sum(-1).clamp(min=1.0)


def centre_bands(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``x (B, F, T)`` less each item's mean of every band over its valid frames (padding set to 0): on log
    features a gain or a fixed channel colouring is an offset per band, and it goes (cepstral mean
    normalisation); it needs nothing but the recording itself."""
    mask = length_mask(lengths, x.shape[-1])
    return (x - masked_mean(x, mask)[..., None]) * mask[:, None, :].to(x.dtype)


def masked_mean_std(x: torch.Tensor, mask: torch.Tensor, frames_dim: int = -1) -> torch.Tensor:
    """``x (B, C, T)`` (or ``(B, T, C)`` with ``frames_dim=1``: no transpose in a graph), ``mask (B, T)`` ->
    ``(B, 2C)`` mean and standard deviation over valid frames (squares as products: a graph's Mul, not a Pow)."""
    m = (mask[:, None, :] if frames_dim == -1 else mask[..., None]).to(x.dtype)
    n = m.sum(frames_dim).clamp(min=1.0)
    mean = (x * m).sum(frames_dim) / n
    centred = x - mean.unsqueeze(frames_dim)
    return torch.cat([mean, torch.sqrt((centred * centred * m).sum(frames_dim) / n + 1e-5)], dim=1)


class AttentionPooling(nn.Module):
    """Attention over valid frames: ``h (B, T, D)``, ``mask (B, T)`` -> ``(B, D)``."""

    def __init__(self, dim: int, hidden: int = 64):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.score(h).squeeze(-1)
        scores = scores.masked_fill(~mask, -1e4)
        weights = torch.softmax(scores, dim=1)
        return torch.bmm(weights[:, None, :], h).squeeze(1)


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of ``x (B, T, D)`` within its length; padding stays where it is."""
    t = x.shape[1]
    steps = torch.arange(t, device=x.device)[None, :]
    idx = lengths[:, None] - 1 - steps
    idx = torch.where(idx < 0, steps.expand_as(idx), idx)
    return torch.gather(x, 1, idx[:, :, None].expand(-1, -1, x.shape[2]))


class BiRecurrent(nn.Module):
    """Bidirectional LSTM/GRU that respects lengths without packing (so it exports to ONNX).

    The backward direction runs on each sequence reversed within its length, so padding
    never enters a valid frame's state. ``(B, T, D_in)`` -> ``(B, T, 2 * hidden)``.
    """

    def __init__(self, input_size: int, hidden: int, layers: int = 1, cell: str = "lstm", dropout: float = 0.0):
        super().__init__()
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}.get(cell)
        if rnn is None:
            raise ValueError(f"cell must be 'lstm' or 'gru', got {cell!r}")
        self.forward_layers = nn.ModuleList()
        self.backward_layers = nn.ModuleList()
        for i in range(layers):
            size = input_size if i == 0 else 2 * hidden
            self.forward_layers.append(rnn(size, hidden, batch_first=True))
            self.backward_layers.append(rnn(size, hidden, batch_first=True))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        for i, (fwd, bwd) in enumerate(zip(self.forward_layers, self.backward_layers)):
            if i > 0:
                x = self.dropout(x)
            out_f, _ = fwd(x)
            out_b, _ = bwd(reverse_padded(x, lengths))
            x = torch.cat([out_f, reverse_padded(out_b, lengths)], dim=-1)
        return x
