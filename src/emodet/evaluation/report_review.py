"""What a reader of the HTML report checks by hand: how far the confidence can be trusted, and the
recordings the model got most confidently wrong, each with a player (embedded, linked or none)."""

from __future__ import annotations

import base64
import io
import os
import urllib.parse
from pathlib import Path

import numpy as np
import yaml

from ..core.fusion import softmax
from .calibration import brier, coverage_curve, ece, reliability
from .report_parts import Evaluated, read_json

MAX_MISTAKES = 8  # recordings listed (and embedded) at most
MAX_SECONDS = 6.0  # of each embedded recording: 8 x 6 s of 16 kHz FLAC stay under 1.5 MB in the page
AUDIO_MODES = ("embed", "link", "none")
NOT_CALIBRATED = ("Its confidences are raw softmax outputs, which networks usually overstate. Fit a temperature with "
                  "`emodet calibrate RUN --from CV_DIR` (a cross-validation of the same recipe) or train with a "
                  "validation split, then export again.")


def confidence_of(ev: Evaluated) -> dict:
    """``{"calibrated": True, ...the calibration block...}`` where a temperature was fitted, else a note why not.

    A run: its metrics.json ``calibration`` block. A cross-validation: each fold's temperature applied to
    its own held-out predictions, judged on them all pooled. An ensemble has no temperature of its own."""
    if ev.kind == "run":
        cal = read_json(ev.path / "metrics.json").get("calibration") or {}
        if cal.get("fitted_on") and "reliability_after" in cal:
            judged = "test" if "test" in read_json(ev.path / "metrics.json") else "validation (the recordings it was " \
                                                                                 "fitted on: an optimistic view)"
            return {"calibrated": True, **cal, "judged_on": judged}
        return {"calibrated": False, "note": f"Not calibrated: {cal.get('note', 'no temperature was fitted')}. "
                                             + NOT_CALIBRATED}
    if ev.kind == "ensemble":
        return {"calibrated": False, "note": "Not calibrated: an ensemble has no temperature of its own (its members' "
                                             "are in their own reports). " + NOT_CALIBRATED}
    temps = {}
    for k, run in enumerate(ev.runs):
        cal = read_json(run / "metrics.json").get("calibration") or {}
        if not cal.get("fitted_on"):
            return {"calibrated": False, "note": f"Not calibrated: fold {k} has no temperature "
                                                 f"({cal.get('note', 'none fitted')}). " + NOT_CALIBRATED}
        temps[str(k)] = float(cal["temperature"])
    return _pooled_calibration(ev, temps)


def _pooled_calibration(ev: Evaluated, temps: dict[str, float]) -> dict:
    index = {lab: i for i, lab in enumerate(ev.labels)}
    targets = np.array([index[r["label"]] for r in ev.predictions])
    probs = np.array([[float(r[f"p_{lab}"]) for lab in ev.labels] for r in ev.predictions])
    t = np.array([temps[str(r["fold"])] for r in ev.predictions])[:, None]
    # a predictions CSV holds softmax(logits); softmax(log p / T) = softmax(logits / T)
    after = softmax(np.log(np.clip(probs, 1e-12, None)) / t)
    values = sorted(set(temps.values()))
    return {"calibrated": True, "temperature": float(np.median(values)), "fitted_on": "each fold's validation speakers",
            "judged_on": "pooled held-out predictions, each fold's own temperature applied",
            "temperatures": temps, "n_eval": len(targets),
            "ece_before": ece(probs, targets), "ece_after": ece(after, targets),
            "brier_before": brier(probs, targets), "brier_after": brier(after, targets),
            "reliability_before": reliability(probs, targets), "reliability_after": reliability(after, targets),
            "coverage": coverage_curve(after, targets)}


def mistakes_of(ev: Evaluated, audio: str, out_dir: Path) -> list[dict]:
    """The misclassified recordings with the highest probability on their wrong answer, most confident first,
    each with ``audio`` (a ``data:`` URI, a path relative to the report, or None) and, if missing, why."""
    wrong = [r for r in ev.predictions if r["label"] != r["predicted"]]
    wrong.sort(key=lambda r: -float(r[f"p_{r['predicted']}"]))
    out = []
    for r in wrong[:MAX_MISTAKES]:
        item = {"path": r["path"], "speaker": r["speaker"], "label": r["label"], "predicted": r["predicted"],
                "confidence": float(r[f"p_{r['predicted']}"]), "p_true": float(r[f"p_{r['label']}"]),
                "audio": None, "audio_note": None}
        if audio != "none":
            file = recording_file(ev, r)
            if not file.is_file():
                item["audio_note"] = f"not found at {file}"
            elif audio == "link":
                item["audio"] = urllib.parse.quote(Path(os.path.relpath(file.resolve(), out_dir.resolve())).as_posix())
            else:
                item["audio"], item["audio_note"] = _embedded(file)
        out.append(item)
    return out


def recording_file(ev: Evaluated, row: dict) -> Path:
    """The file a predictions row names, resolved as the run that made it read it (its data root, or
    without one the manifest it read, whose folder the paths are relative to)."""
    from ..data.manifest import resolve_path

    run = ev.runs[int(row["fold"])] if ev.kind == "cv" and row.get("fold", "") != "" else ev.runs[0]
    data = (yaml.safe_load((run / "config.yaml").read_text()) or {}).get("data", {})
    manifest = data.get("manifest") if ev.kind == "run" or ev.kind == "cv" else run / "manifest.csv"
    return resolve_path(row["path"], data.get("root"), manifest)


def _embedded(file: Path) -> tuple[str | None, str | None]:
    """The first ``MAX_SECONDS`` of a recording as a base64 FLAC ``data:`` URI (mono, 16 kHz), and a note."""
    import soundfile as sf

    from ..core.audio import load_audio
    from ..core.errors import EmodetError

    sr = 16000
    try:
        wav = load_audio(file, sr)
    except EmodetError as exc:
        return None, f"unreadable: {exc}"
    note = f"first {MAX_SECONDS:g} s of {len(wav) / sr:.1f} s" if len(wav) > MAX_SECONDS * sr else None
    buf = io.BytesIO()
    sf.write(buf, np.clip(wav[: int(MAX_SECONDS * sr)], -1, 1), sr, format="FLAC", subtype="PCM_16")
    return "data:audio/flac;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), note
