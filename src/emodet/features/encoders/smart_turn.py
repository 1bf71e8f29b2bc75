"""The offline encoder: Smart Turn v3.2's Whisper-tiny encoder, from a wheel on the package index.

``pipecat-ai==1.14.0`` ships ``smart-turn-v3.2-cpu.onnx`` (BSD-2-Clause): a 4-layer Whisper-tiny encoder
(384 dims) fine-tuned for end-of-turn detection in 23 languages, int8, 8 s of 80-band log-mel in.
``fetch_smart_turn()`` downloads only that wheel (``pip download --no-deps``; pipecat is never
installed), checks the ONNX file's SHA-256, and converts it into emodet's encoder cache: the int8
weights dequantised to float under transformers' Whisper names (``weights.npz``), with the
encoder's shape (``config.json``) and the original file kept beside them (``model.onnx``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ...core.errors import UsageError
from ...core.io import atomic_write_bytes, atomic_write_json

NAME = "smart-turn-v3.2"
WHEEL = "pipecat-ai==1.14.0"
MEMBER = "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"
CONFIG = {"family": "whisper", "n_mels": 80, "d_model": 384, "layers": 4, "heads": 6, "ffn": 1536,
          "max_positions": 400, "do_normalize": True, "source": f"{WHEEL} {MEMBER}", "sha256": SHA256,
          "licence": "BSD-2-Clause (Daily, pipecat); weights int8, dequantised"}
# its input embedding alone, the convolutions factored to these ranks (the edge student's pretrained front end:
# 0.75 MB of float32 weights with the mel filters; the ranks are the largest that keep a student under 1 MB);
# other ranks by name: smart-turn-v3.2-stem-48x64
STEM_NAME, STEM_RANKS = "smart-turn-v3.2-stem", (64, 96)
# the offline encoder's input alone: Whisper's 80-band log-mel of the normalised waveform, 80 values a 10 ms frame
# (an exported graph takes up to 8 s, as the encoder), for models that train the stem themselves (``encoder_stem``)
LOGMEL_NAME = "whisper-logmel"
_STEM = re.compile(re.escape(STEM_NAME) + r"(?:-(\d+)x(\d+))?")


def stem_ranks(name: str) -> tuple[int, int] | None:
    """The two convolutions' ranks of a stem name (``None``: not a stem); a malformed stem name is refused."""
    if not name.startswith(STEM_NAME):
        return None
    match = _STEM.fullmatch(name)
    full = (min(CONFIG["d_model"], 3 * CONFIG["n_mels"]), CONFIG["d_model"])  # past these the factors only grow
    if not match or (match.group(1) and not (0 < int(match.group(1)) <= full[0] and 0 < int(match.group(2)) <= full[1])):
        raise UsageError(f"encoder {name!r}: a stem of the offline encoder is {STEM_NAME!r} (ranks "
                         f"{STEM_RANKS[0]}x{STEM_RANKS[1]}) or {STEM_NAME}-RxS with ranks 1 to {full[0]} and 1 to "
                         f"{full[1]} (the convolutions' full ranks), e.g. {STEM_NAME}-48x64")
    return (int(match.group(1)), int(match.group(2))) if match.group(1) else STEM_RANKS


def encoders_home() -> Path:
    """Where fetched encoders live: ``$EMODET_HOME/encoders`` (default ``~/.cache/emodet/encoders``)."""
    return Path(os.environ.get("EMODET_HOME") or Path.home() / ".cache" / "emodet") / "encoders"


def smart_turn_dir() -> Path:
    return encoders_home() / NAME


def is_fetched() -> bool:
    return (smart_turn_dir() / "weights.npz").is_file() and (smart_turn_dir() / "config.json").is_file()


def fetch_smart_turn(wheel: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Download (or take ``wheel``), verify and convert the offline encoder; returns its folder."""
    out = smart_turn_dir()
    if is_fetched() and not force:
        return out
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                                   "--quiet", "--dest", tmp, WHEEL], capture_output=True, text=True)
            wheels = list(Path(tmp).glob("pipecat_ai-*.whl"))
            if done.returncode != 0 or not wheels:
                reason = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
                raise UsageError(f"could not download {WHEEL} from the package index ({reason}); on a machine "
                                 f"without it, download the wheel elsewhere and pass it: emodet encoders fetch "
                                 f"--wheel pipecat_ai-1.14.0-py3-none-any.whl")
            wheel = wheels[0]
        try:
            data = zipfile.ZipFile(wheel).read(MEMBER)
        except (OSError, KeyError, zipfile.BadZipFile) as exc:
            raise UsageError(f"{wheel}: not the {WHEEL} wheel holding {MEMBER} ({exc})") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        raise UsageError(f"{MEMBER} has SHA-256 {digest}, expected {SHA256}: refusing a file that is not the one "
                         "emodet was checked with")
    weights = convert_onnx(data)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "model.onnx", data)
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **weights)
    atomic_write_bytes(out / "weights.npz", buffer.getvalue())
    atomic_write_json(out / "config.json", CONFIG)  # written last: its presence means the folder is complete
    return out


def convert_onnx(data: bytes) -> dict[str, np.ndarray]:
    """The encoder's weights from the Smart Turn ONNX graph, dequantised, under transformers' Whisper names."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(data).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    values = dict(inits)
    for node in graph.node:  # weights stored int8 with a scale (per tensor or per channel) and a zero point
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            q, scale = inits[node.input[0]].astype(np.float32), inits[node.input[1]].astype(np.float32)
            zero = inits[node.input[2]].astype(np.float32) if len(node.input) > 2 else np.zeros_like(scale)
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = [1] * q.ndim
            if scale.size > 1:  # per channel along ``axis``
                shape[axis % q.ndim] = -1
            values[node.output[0]] = (q - zero.reshape(shape)) * scale.reshape(shape)
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def followed(name: str) -> list:
        """The nodes reading ``name``, through an activation's Quantize/Dequantize pair."""
        out = []
        for node in consumers.get(name, []):
            out += followed(node.output[0]) if node.op_type in ("QuantizeLinear", "DequantizeLinear") else [node]
        return out

    weights = {}
    for key in inits:
        if key.startswith("inner.encoder.") and not key.endswith(("_quantized", "_scale", "_zero_point")):
            weights[key[len("inner.encoder."):]] = inits[key]
    for key in ("conv1", "conv2"):
        weights[f"{key}.weight"] = values[f"inner.encoder.{key}.weight_DequantizeLinear_Output"]
        weights[f"{key}.bias"] = values[f"inner.encoder.{key}.bias"]
    for node in graph.node:  # linear layers: a MatMul by a dequantised weight, then an Add of the named bias
        if node.op_type != "MatMul" or node.input[1] not in values or node.input[1] in inits:
            continue
        bias = next((n.input[1] for n in followed(node.output[0]) if n.op_type == "Add" and
                     n.input[1].startswith("inner.encoder.")), None)
        if bias is not None:
            weights[bias[len("inner.encoder."):].replace(".bias", ".weight")] = values[node.input[1]].T
    for node in graph.node:  # k_proj has no bias: the MatMul beside q_proj and v_proj on the same layer norm
        if node.op_type == "LayerNormalization" and "self_attn_layer_norm" in node.input[1]:
            layer = node.input[1][len("inner.encoder."):].split(".self_attn")[0]
            for matmul in followed(node.output[0]):
                if f"{layer}.self_attn.k_proj.weight" not in weights and matmul.op_type == "MatMul" and not any(
                        n.op_type == "Add" for n in followed(matmul.output[0])):
                    weights[f"{layer}.self_attn.k_proj.weight"] = values[matmul.input[1]].T
    expected = 7 + 15 * CONFIG["layers"]  # convolutions, positions, final norm; 15 a layer (k_proj has no bias)
    if len(weights) != expected:
        raise UsageError(f"the Smart Turn graph gave {len(weights)} encoder tensors, expected {expected}: not the "
                         "graph emodet knows")
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}


def load_smart_turn() -> tuple[dict, dict[str, np.ndarray]]:
    """``(config, weights)`` of the fetched offline encoder, or a UsageError saying how to fetch it."""
    folder = smart_turn_dir()
    if not is_fetched():
        raise UsageError(f"encoder {NAME!r} is not fetched (looked in {folder}): run `emodet encoders fetch` once "
                         f"(downloads the {WHEEL} wheel from the package index, checks its SHA-256, keeps only the "
                         "encoder); set EMODET_HOME to keep it elsewhere")
    config = json.loads((folder / "config.json").read_text())
    with np.load(folder / "weights.npz") as npz:
        return config, {k: npz[k] for k in npz.files}
