"""ONNX graphs from torch modules with the dynamo exporter: export, clean-up, sparse front-end constants."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.io import atomic_write_bytes


@contextlib.contextmanager
def quiet():
    """The exporter prints progress and warnings about optional packages; keep them off the user's screen."""
    # the root logger too: ONNX Runtime's quantiser warns through logging.warning ("Please consider to run
    # pre-processing ...") about a step that does not apply to these small graphs
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript", "onnxruntime",
                                              None)]
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
                dynamic_shapes: dict, opset: int = 18, metadata: dict | None = None,
                output_names: tuple = ("logits",)) -> Path:
    """Export ``model`` with ``torch.onnx.export(dynamo=True)`` and write the file atomically."""
    import onnx

    model = model.eval()
    torch._dynamo.reset()  # a fresh tracer: state from an earlier export can specialise dynamic dimensions
    with quiet():
        program = torch.onnx.export(model, example_inputs, input_names=input_names, output_names=list(output_names),
                                    dynamic_shapes=dynamic_shapes, opset_version=opset, dynamo=True,
                                    external_data=False, verbose=False)
    proto = program.model_proto
    _strip_debug_info(proto.graph)
    sparse_front_end(proto.graph)
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


def sparse_front_end(graph, min_zeros: float = 0.75) -> None:
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


def dense_front_end(graph) -> None:
    """Undo ``sparse_front_end``: sparse initializers back to dense ones."""
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
