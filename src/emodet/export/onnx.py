"""ONNX export of a model (and optionally its feature front end) with the dynamo exporter."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..core.errors import UsageError
from ..data.normalize import GROUPED_MODES
from .graph import export_onnx
from .parity import TOLERANCE, agreement, feeds, parity, real_inputs
from .quantize import quantize_int8

# What an exported model needs at deployment, by normalisation mode (metadata "emodet.needs"; the runtime
# refuses to answer without it rather than answer nonsense)
NEEDS = {"none": "nothing", "global": "nothing", "corpus": "adapt", "speaker": "calibrate"}


class DeployModel(nn.Module):
    """What an exported file computes: [front end] -> normalisation -> classifier -> logits.

    Inputs: ``audio (B, N)`` + ``audio_lengths (B,)`` with the front end, else ``features
    (B, F, T)`` + ``lengths (B,)``; per-speaker and per-corpus normalised models also take
    ``norm_mean`` and ``norm_std`` ``(F,)``; global statistics are constants of the graph.
    """

    def __init__(self, model: nn.Module, frontend: nn.Module | None, hop_length: int, normalizer: dict,
                 features_out: bool = False):
        super().__init__()
        self.model, self.frontend, self.hop = model, frontend, hop_length
        self.features_out = features_out  # also output the features (a runtime that cannot compute them calibrates)
        self.mode = normalizer.get("mode", "none")
        if self.mode == "global":
            self.register_buffer("mean", torch.tensor(normalizer["mean"], dtype=torch.float32)[:, None])
            self.register_buffer("std", torch.tensor(normalizer["std"], dtype=torch.float32)[:, None])
        self.whiten = normalizer.get("whiten", "none") != "none"  # per-corpus whitening: the domain's matrix, an input
        nap = normalizer.get("nap")  # nuisance directions projected out after normalising
        self.register_buffer("nap", torch.tensor(nap, dtype=torch.float32).t() if nap else None)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, norm_mean: torch.Tensor | None = None,
                norm_std: torch.Tensor | None = None, norm_whiten: torch.Tensor | None = None) -> torch.Tensor:
        if getattr(self.frontend, "takes_lengths", False):  # e.g. an encoder: it pools over each item's length
            x, lengths = self.frontend(x, lengths)
        elif self.frontend is not None:
            frames = torch.div(lengths, self.hop, rounding_mode="floor") + 1
            # a spectral front end takes each item's peak over its own frames: an item padded in a batch = alone
            x = self.frontend(x, frames) if getattr(self.frontend, "takes_frames", False) else self.frontend(x)
            lengths = frames
        features = x
        if self.mode == "global":
            x = (x - self.mean) / self.std
        elif self.mode in GROUPED_MODES:  # the speaker's (or domain's) statistics, given as inputs
            x = (x - norm_mean[:, None]) / norm_std[:, None]
            if self.whiten:
                x = torch.matmul(norm_whiten, x)
        if self.nap is not None:
            x = x - torch.matmul(self.nap, torch.matmul(self.nap.t(), x))
        logits = self.model(x, lengths)
        return (logits, features) if self.features_out else logits


def graph_front_end(spec, sr: int, params: dict) -> nn.Module:
    """The feature front end as it goes into a graph (a spectral one as a two-stage matmul DFT: ONNX Runtime's
    STFT operator is about 3x slower)."""
    frontend = spec.module_factory(sr, params)
    if spec.exportable and not spec.graph_only:
        from ..features.spectral import use_graph_spectrogram

        frontend = use_graph_spectrogram(frontend)
    return frontend.eval()


def graph_inputs(sr: int, hop: int, n_feat: int, with_features: bool, speaker: bool, max_seconds=None,
                 whiten: bool = False):
    """``(example inputs, input names, dynamic shapes)`` of a ``DeployModel``'s export: raw audio of any length
    (up to ``max_seconds``) or features of any length, any batch; a speaker's (domain's) statistics as inputs
    (``whiten``: the domain's whitening matrix too)."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    if with_features:
        samples = torch.export.Dim("samples", min=max(2 * hop * 8, 2560),
                                   max=int(max_seconds * sr) if max_seconds else 100_000_000)
        example = (torch.randn(2, sr) * 0.1, torch.tensor([sr, sr // 2]))
        names, shapes = ["audio", "audio_lengths"], {"x": {0: batch, 1: samples}, "lengths": {0: batch}}
    else:
        frames = torch.export.Dim("frames", min=8, max=1_000_000)
        example = (torch.randn(2, n_feat, 64), torch.tensor([64, 40]))
        names, shapes = ["features", "lengths"], {"x": {0: batch, 2: frames}, "lengths": {0: batch}}
    if speaker:
        example += (torch.zeros(n_feat), torch.ones(n_feat))
        names += ["norm_mean", "norm_std"]
        shapes.update({"norm_mean": {}, "norm_std": {}})
    if speaker and whiten:
        example += (torch.eye(n_feat),)
        names.append("norm_whiten")
        shapes["norm_whiten"] = {}
    return example, names, shapes


def export_run(run_dir: str | Path, out: str | Path, opset: int = 18, with_features: bool = False,
               quantize: str | None = None, verify: bool = True) -> dict:
    """Export a run or ensemble directory to ONNX with its metadata; verify parity in ONNX Runtime.

    Returns a report: path, size, largest logit difference against PyTorch and, with
    ``quantize="int8"``, the int8 file's size and its agreement with fp32.
    """
    from .. import __version__
    from ..features import get_feature_spec, load_plugins
    from ..features.spectral import resolve_frame_params
    from ..runs import load_predictor, load_run

    info = load_run(run_dir)
    load_plugins(info.plugins)
    spec = get_feature_spec(info.feature)
    sr = info.sample_rate
    with_features = with_features or spec.graph_only  # the runtime cannot compute it: it goes in the graph
    spectral = spec.exportable and not spec.graph_only
    frame_params = resolve_frame_params(sr, info.feature_params) if spectral else dict(info.feature_params)
    if with_features and not spec.exportable:
        raise UsageError(f"feature {info.feature!r} cannot go inside an ONNX graph (it is not a torch module: "
                         "a numpy plugin or openSMILE); export without --with-features and compute the features "
                         "before calling the model")
    if quantize not in (None, "int8"):
        raise UsageError(f"--quantize {quantize!r}: the valid value is int8")
    model = load_predictor(run_dir).eval()
    frontend = graph_front_end(spec, sr, info.feature_params) if with_features else None
    hop = int(frame_params.get("hop_length") or 1)
    speaker = info.normalize in GROUPED_MODES  # statistics of the speaker (or domain) come as inputs
    # the runtime computes statistics from features; one it cannot compute comes out of the graph beside the logits
    features_out = speaker and spec.graph_only
    deploy = DeployModel(model, frontend, hop, info.normalizer, features_out).eval()
    n_feat = int(info.input_shape[0])
    max_seconds = getattr(frontend, "max_seconds", None)  # an encoder's window: the runtime cuts longer audio
    example, names, shapes = graph_inputs(sr, hop, n_feat, with_features, speaker, max_seconds, deploy.whiten)
    metadata = {"emodet.labels": json.dumps(info.labels), "emodet.sample_rate": sr,
                "emodet.feature": info.feature, "emodet.feature_params": json.dumps(frame_params),
                "emodet.normalizer": json.dumps({k: v for k, v in info.normalizer.items() if k != "nap"}),
                "emodet.with_features": int(with_features),
                "emodet.native_rate": int(spec.native_rate), "emodet.version": __version__, "emodet.inputs": json.dumps(names),
                "emodet.needs": NEEDS[info.normalize]}
    if max_seconds:
        metadata["emodet.max_seconds"] = max_seconds
    metadata["emodet.temperature"] = float(info.metrics.get("calibration", {}).get("temperature", 1.0))
    out = Path(out)
    export_onnx(deploy, out, example, names, shapes, opset, metadata,
                ("logits", "features") if features_out else ("logits",))
    report = {"path": str(out), "bytes": out.stat().st_size, "inputs": names}
    if verify:
        report["max_abs_diff"], excess = parity(deploy, out, names, info, with_features, n_feat, speaker, sr)
        if excess > 0:
            raise UsageError(f"{out}: ONNX Runtime differs from PyTorch by {report['max_abs_diff']:.2e} (more than "
                             f"{TOLERANCE:g} + {TOLERANCE:g} x |logit|); the export is not trustworthy")
    if quantize == "int8":
        q_path = out.with_name(out.stem + ".int8" + out.suffix)
        # activation ranges from training recordings (never the test speakers)
        calibration = feeds(real_inputs(info, sr, 32, split="train"), names, info, with_features, n_feat, speaker, sr)
        quantize_int8(out, q_path, metadata, calibration, weight_only=spec.graph_only)
        report["int8_path"], report["int8_bytes"] = str(q_path), q_path.stat().st_size
        if verify:
            report["int8_agreement"], report["int8_checked"] = agreement(out, q_path, names, info, with_features,
                                                                         n_feat, speaker, sr)
    return report
