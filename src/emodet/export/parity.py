"""Checks of an exported file: ONNX Runtime against PyTorch on real recordings, int8 against fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def real_inputs(info, sr: int, n: int = 4, split: str = "test") -> list[np.ndarray]:
    """A few recordings of the run's ``split`` (or any), of different lengths, as mono arrays."""
    from ..core.audio import load_audio
    from ..data.manifest import read_manifest, resolve_path

    wavs = []
    if info.manifest.is_file():
        rows = read_manifest(info.manifest)
        rows = [r for r in rows if r.get("split") == split] or rows
        for r in rows[:: max(1, len(rows) // n)][:n]:
            try:
                wavs.append(load_audio(resolve_path(r["path"], info.data_root, info.manifest), sr))
            except Exception:  # noqa: BLE001 - parity falls back to synthetic inputs below
                continue
    rng = np.random.default_rng(0)
    while len(wavs) < 2:
        wavs.append((rng.standard_normal(int(sr * (1.3 + len(wavs)))) * 0.05).astype(np.float32))
    wavs.append(wavs[0][: int(0.7 * len(wavs[0]))])  # a shorter piece: another length
    return wavs


def feeds(wavs, names, info, with_features, n_feat, speaker, sr):
    from ..core.stats import group_inputs
    from ..features import compute_feature

    feats = [np.array(compute_feature(info.feature, w, sr, info.feature_params), dtype=np.float32) for w in wavs]
    # per-speaker models: the check recordings share one set of statistics, as a calibrated speaker's would
    # (one recording's own statistics would zero out functionals, which have a single frame)
    stats = group_inputs(feats, info.normalizer.get("whiten")) if speaker and feats else {}
    stats = {k: v.astype(np.float32) for k, v in stats.items()}
    feeds = []
    for w, f in zip(wavs, feats):
        if with_features:
            feed = {"audio": w[None].astype(np.float32), "audio_lengths": np.array([len(w)], np.int64)}
        else:
            feed = {"features": f[None], "lengths": np.array([f.shape[1]], np.int64)}
        feeds.append({**feed, **stats})
    return feeds


TOLERANCE = 1e-3  # a logit may differ by 1e-3 plus 1e-3 of its size (numpy.allclose's rule)


def parity(deploy, path, names, info, with_features, n_feat, speaker, sr) -> tuple[float, float]:
    """``(largest |ONNX Runtime - PyTorch| logit difference, largest excess over the tolerance)`` on real inputs;
    the export is trustworthy when the excess is at most 0."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst, excess = 0.0, -np.inf
    for feed in feeds(real_inputs(info, sr), names, info, with_features, n_feat, speaker, sr):
        with torch.no_grad():
            ref = deploy(*[torch.from_numpy(feed[n]) for n in names])
            ref = (ref[0] if isinstance(ref, tuple) else ref).numpy()
        diff = np.abs(session.run(["logits"], feed)[0] - ref)
        worst = max(worst, float(diff.max()))
        excess = max(excess, float((diff - TOLERANCE - TOLERANCE * np.abs(ref)).max()))
    return worst, excess


def agreement(fp32: Path, int8: Path, names, info, with_features, n_feat, speaker, sr) -> tuple[float, int]:
    """How often the int8 graph's top label is fp32's on a few real recordings, and how many were checked."""
    from .quantize import top_label_agreement

    checks = list(feeds(real_inputs(info, sr, 8), names, info, with_features, n_feat, speaker, sr))
    return top_label_agreement(fp32, int8, checks), len(checks)
