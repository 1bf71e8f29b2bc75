"""ONNX export of a model (and optionally its feature front end) with the dynamo exporter."""

from __future__ import annotations

import contextlib
import json
import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import UsageError
from ..io import atomic_write_bytes


@contextlib.contextmanager
def _quiet():
    """The exporter prints progress and warnings about optional packages; keep them off the user's screen."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


class _WithLengths(nn.Module):
    """Wraps a model so its ONNX graph takes ``x (B, F, T)`` and ``lengths (B,)`` int64."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.model(x, lengths)


def export_onnx(model: nn.Module, path: str | Path, example_inputs: tuple, input_names: list[str],
                dynamic_shapes: dict, opset: int = 18, metadata: dict | None = None) -> Path:
    """Export ``model`` with ``torch.onnx.export(dynamo=True)`` and write the file atomically."""
    import onnx

    model = model.eval()
    torch._dynamo.reset()  # a fresh tracer: state from an earlier export can specialise dynamic dimensions
    with _quiet():
        program = torch.onnx.export(model, example_inputs, input_names=input_names, output_names=["logits"],
                                    dynamic_shapes=dynamic_shapes, opset_version=opset, dynamo=True,
                                    external_data=False, verbose=False)
    proto = program.model_proto
    _strip_debug_info(proto.graph)
    _sparse_front_end(proto.graph)
    if metadata:
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = str(key), str(value)
    path = Path(path)
    atomic_write_bytes(path, proto.SerializeToString())
    onnx.checker.check_model(str(path))
    return path


def _strip_debug_info(graph) -> None:
    """Drop the exporter's per-node debug records (stack traces, source names): they made up a third
    of a tiny model's file and a device has no use for them."""
    for node in graph.node:
        del node.metadata_props[:]
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _strip_debug_info(sub)
    for value in list(graph.value_info) + list(graph.input) + list(graph.output):
        del value.metadata_props[:]


def _sparse_front_end(graph, min_zeros: float = 0.75) -> None:
    """Store mostly-zero front-end constants (the mel filter bank is 97% zeros) as sparse
    initializers: exact values, a tenth of the bytes; ONNX Runtime densifies them at load."""
    from onnx import helper, numpy_helper

    for init in list(graph.initializer):
        if not init.name.startswith("frontend."):
            continue
        dense = numpy_helper.to_array(init)
        if dense.size < 1024 or np.mean(dense == 0) < min_zeros:
            continue
        nonzero = np.flatnonzero(dense)
        values = numpy_helper.from_array(dense.reshape(-1)[nonzero], init.name)
        graph.initializer.remove(init)
        graph.sparse_initializer.append(helper.make_sparse_tensor(
            values, numpy_helper.from_array(nonzero.astype(np.int64), ""), list(dense.shape)))


def _dense_front_end(graph) -> None:
    """Undo ``_sparse_front_end``: sparse initializers back to dense ones."""
    from onnx import numpy_helper

    for sparse in list(graph.sparse_initializer):
        values = numpy_helper.to_array(sparse.values)
        dense = np.zeros(int(np.prod(sparse.dims)), values.dtype)
        dense[numpy_helper.to_array(sparse.indices).reshape(-1)] = values
        graph.initializer.append(numpy_helper.from_array(dense.reshape(list(sparse.dims)), sparse.values.name))
        graph.sparse_initializer.remove(sparse)


def export_classifier(model: nn.Module, path: str | Path, n_features: int, opset: int = 18,
                      metadata: dict | None = None) -> Path:
    """A classifier over features: inputs ``features (B, F, T)`` float32 and ``lengths (B,)`` int64."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    frames = torch.export.Dim("frames", min=8, max=1_000_000)
    example = (torch.randn(2, n_features, 64), torch.tensor([64, 40]))
    return export_onnx(_WithLengths(model), path, example, ["features", "lengths"],
                       {"x": {0: batch, 2: frames}, "lengths": {0: batch}}, opset, metadata)


def onnx_logits(path: str | Path, features: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Run an exported classifier in ONNX Runtime (one thread)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"features": features.astype(np.float32), "lengths": lengths.astype(np.int64)})[0]


class DeployModel(nn.Module):
    """What an exported file computes: [front end] -> normalisation -> classifier -> logits.

    Inputs: ``audio (B, N)`` + ``audio_lengths (B,)`` with the front end, else ``features
    (B, F, T)`` + ``lengths (B,)``; per-speaker normalised models also take ``norm_mean`` and
    ``norm_std`` ``(F,)``; global statistics are constants of the graph.
    """

    def __init__(self, model: nn.Module, frontend: nn.Module | None, hop_length: int, normalizer: dict):
        super().__init__()
        self.model, self.frontend, self.hop = model, frontend, hop_length
        self.mode = normalizer.get("mode", "none")
        if self.mode == "global":
            self.register_buffer("mean", torch.tensor(normalizer["mean"], dtype=torch.float32)[:, None])
            self.register_buffer("std", torch.tensor(normalizer["std"], dtype=torch.float32)[:, None])

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, norm_mean: torch.Tensor | None = None,
                norm_std: torch.Tensor | None = None) -> torch.Tensor:
        if self.frontend is not None:
            x = self.frontend(x)
            lengths = torch.div(lengths, self.hop, rounding_mode="floor") + 1
        if self.mode == "global":
            x = (x - self.mean) / self.std
        elif self.mode == "speaker":
            x = (x - norm_mean[:, None]) / norm_std[:, None]
        return self.model(x, lengths)


def export_run(run_dir: str | Path, out: str | Path, opset: int = 18, with_features: bool = False,
               quantize: str | None = None, verify: bool = True) -> dict:
    """Export a run or ensemble directory to ONNX with its metadata; verify parity in ONNX Runtime.

    Returns a report: path, size, largest logit difference against PyTorch and, with
    ``quantize="int8"``, the int8 file's size and its agreement with fp32.
    """
    from .. import __version__
    from ..ensemble import load_predictor, predictor_info
    from ..features import get_feature_spec, load_plugins
    from ..features.spectral import resolve_frame_params

    info = predictor_info(run_dir)
    load_plugins(info["plugins"])
    spec = get_feature_spec(info["feature"])
    sr = int(info["sample_rate"])
    frame_params = resolve_frame_params(sr, info["feature_params"]) if spec.exportable else dict(info["feature_params"])
    if with_features and not spec.exportable:
        raise UsageError(f"feature {info['feature']!r} cannot go inside an ONNX graph (it is not a torch module: "
                         "a numpy plugin or openSMILE); export without --with-features and compute the features "
                         "before calling the model")
    if quantize not in (None, "int8"):
        raise UsageError(f"--quantize {quantize!r}: the valid value is int8")
    model = load_predictor(run_dir).eval()
    frontend = None
    if with_features:  # the two-stage matmul DFT: ONNX Runtime's STFT operator is about 3x slower on CPU
        from ..features.spectral import use_graph_spectrogram

        frontend = use_graph_spectrogram(spec.module_factory(sr, info["feature_params"])).eval()
    hop = int(frame_params.get("hop_length") or 1)
    deploy = DeployModel(model, frontend, hop, info["normalizer"]).eval()
    n_feat = int(info["input_shape"][0])
    speaker = info["normalizer"].get("mode") == "speaker"
    batch = torch.export.Dim("batch", min=1, max=4096)
    if with_features:
        samples = torch.export.Dim("samples", min=2 * hop * 8, max=100_000_000)
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
    metadata = {"emodet.labels": json.dumps(info["labels"]), "emodet.sample_rate": sr,
                "emodet.feature": info["feature"], "emodet.feature_params": json.dumps(frame_params),
                "emodet.normalizer": json.dumps(info["normalizer"]), "emodet.with_features": int(with_features),
                "emodet.native_rate": int(spec.native_rate), "emodet.version": __version__, "emodet.inputs": json.dumps(names)}
    out = Path(out)
    export_onnx(deploy, out, example, names, shapes, opset, metadata)
    report = {"path": str(out), "bytes": out.stat().st_size, "inputs": names}
    if verify:
        report["max_abs_diff"] = _parity(deploy, out, names, info, with_features, n_feat, speaker, sr)
        if report["max_abs_diff"] > 1e-3:
            raise UsageError(f"{out}: ONNX Runtime differs from PyTorch by {report['max_abs_diff']:.2e} "
                             "(more than 1e-3); the export is not trustworthy")
    if quantize == "int8":
        q_path = out.with_name(out.stem + ".int8" + out.suffix)
        # activation ranges from training recordings (never the test speakers)
        calibration = _feeds(_real_inputs(info, sr, 32, split="train"), names, info, with_features, n_feat, speaker, sr)
        quantize_int8(out, q_path, metadata, calibration)
        report["int8_path"], report["int8_bytes"] = str(q_path), q_path.stat().st_size
        if verify:
            report["int8_agreement"] = _agreement(out, q_path, names, info, with_features, n_feat, speaker, sr)
    return report


def quantize_int8(src: Path, dst: Path, metadata: dict, calibration: list[dict] | None = None) -> None:
    """int8 weights (ONNX Runtime's quantiser), metadata kept, written atomically.

    With ``calibration`` feeds, convolutions are quantised statically (``QLinearConv``, activation
    ranges measured on those inputs): ONNX Runtime runs them about as fast as float, where the
    dynamic form (``ConvInteger``) is 2-3x slower. Everything else with weights (MatMul, Gemm,
    LSTM, ...) is quantised dynamically. The front end (DFT stages, mel filters, DCT) stays float:
    8-bit spectra lose the quiet bins.
    """
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    proto = onnx.load(str(src))
    _dense_front_end(proto.graph)  # ONNX Runtime's quantiser does not read sparse initializers
    front = {i.name for i in proto.graph.initializer if i.name.startswith("frontend.")}
    keep_float = [n.name for n in proto.graph.node if front & set(n.input)]
    convs = [n for n in proto.graph.node if n.op_type == "Conv" and n.name not in keep_float]
    temps = [dst.with_name(f".{dst.name}.{os.getpid()}.{i}.tmp") for i in range(3)]

    class _Feeds(CalibrationDataReader):
        def __init__(self, feeds):
            self.feeds = iter(feeds)

        def get_next(self):
            return next(self.feeds, None)

    try:
        temps[2].write_bytes(proto.SerializeToString())  # the quantisers' input: dense, a private temp file
        step = src = temps[2]
        with _quiet():
            if calibration and convs:
                quantize_static(str(src), str(temps[0]), _Feeds(calibration), quant_format=QuantFormat.QOperator,
                                op_types_to_quantize=["Conv"], per_channel=True, weight_type=QuantType.QInt8,
                                activation_type=QuantType.QUInt8, nodes_to_exclude=keep_float)
                step = temps[0]
            quantize_dynamic(str(step), str(temps[1]), weight_type=QuantType.QInt8, nodes_to_exclude=keep_float)
        proto = onnx.load(str(temps[1]))
        _sparse_front_end(proto.graph)
        existing = {p.key for p in proto.metadata_props}
        for key, value in metadata.items():
            if key not in existing:
                entry = proto.metadata_props.add()
                entry.key, entry.value = str(key), str(value)
        atomic_write_bytes(dst, proto.SerializeToString())
    finally:
        for tmp in temps:
            if tmp.exists():
                tmp.unlink()


def _real_inputs(info: dict, sr: int, n: int = 4, split: str = "test") -> list[np.ndarray]:
    """A few recordings of the run's ``split`` (or any), of different lengths, as mono arrays."""
    import csv

    from ..audio import load_audio
    from ..data.manifest import resolve_path

    wavs = []
    manifest = Path(info["manifest"])
    if manifest.is_file():
        with open(manifest, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        rows = [r for r in rows if r.get("split") == split] or rows
        for r in rows[:: max(1, len(rows) // n)][:n]:
            try:
                wavs.append(load_audio(resolve_path(r["path"], info["data_root"], manifest), sr))
            except Exception:  # noqa: BLE001 - parity falls back to synthetic inputs below
                continue
    rng = np.random.default_rng(0)
    while len(wavs) < 2:
        wavs.append((rng.standard_normal(int(sr * (1.3 + len(wavs)))) * 0.05).astype(np.float32))
    wavs.append(wavs[0][: int(0.7 * len(wavs[0]))])  # a shorter piece: another length
    return wavs


def _feeds(wavs, names, info, with_features, n_feat, speaker, sr):
    from ..stats import frame_moments
    from ..features import compute_feature

    feats = [np.array(compute_feature(info["feature"], w, sr, info["feature_params"]), dtype=np.float32) for w in wavs]
    # per-speaker models: the check recordings share one set of statistics, as a calibrated speaker's would
    # (one recording's own statistics would zero out functionals, which have a single frame)
    stats = dict(zip(("norm_mean", "norm_std"), frame_moments(feats))) if speaker and feats else {}
    feeds = []
    for w, f in zip(wavs, feats):
        if with_features:
            feed = {"audio": w[None].astype(np.float32), "audio_lengths": np.array([len(w)], np.int64)}
        else:
            feed = {"features": f[None], "lengths": np.array([f.shape[1]], np.int64)}
        feeds.append({**feed, **stats})
    return feeds


def _parity(deploy, path, names, info, with_features, n_feat, speaker, sr) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for feed in _feeds(_real_inputs(info, sr), names, info, with_features, n_feat, speaker, sr):
        with torch.no_grad():
            ref = deploy(*[torch.from_numpy(feed[n]) for n in names]).numpy()
        worst = max(worst, float(np.abs(session.run(["logits"], feed)[0] - ref).max()))
    return worst


def _agreement(fp32: Path, int8: Path, names, info, with_features, n_feat, speaker, sr) -> float:
    import onnxruntime as ort

    a = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    feeds = _feeds(_real_inputs(info, sr, 8), names, info, with_features, n_feat, speaker, sr)
    same = [int(a.run(["logits"], f)[0].argmax() == b.run(["logits"], f)[0].argmax()) for f in feeds]
    return float(np.mean(same))
