"""What the HTML report shows of a run, a cross-validation or an ensemble, read from its directory.

``evaluated(path)`` reads the figures a directory holds (a run's test block, or its validation block
when it trained on every speaker; a cross-validation's pooled held-out figures; an ensemble's
evaluation on its members' test split, made with ``evaluate_directory`` when the directory has none)
and its predictions; ``headline`` adds the speaker-bootstrap intervals, ``setup_of`` says what was run.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..core.errors import UsageError
from .bootstrap import METRICS, speaker_bootstrap

NEEDS_AT_DEPLOYMENT = {
    "global": "nothing: one recording of an unknown speaker is enough",
    "corpus": "unlabelled recordings of the new domain (EmotionPredictor.adapt, emodet predict --adapt DIR)",
    "speaker": "a few recordings of the speaker (EmotionPredictor.calibrate, emodet predict --calibrate DIR)",
    "none": "nothing (the features are used as they are)",
}
KINDS = {"run": "run", "cv": "cross-validation", "ensemble": "ensemble", "benchmark": "benchmark"}


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def is_table(path: Path) -> bool:
    """A benchmark's JSON table: ``{"rows": {system: {column: value}}, ...}``."""
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("rows"), dict)


def kind_of(path: Path) -> str:
    """``run``, ``cv``, ``ensemble`` or ``benchmark``; anything else is a UsageError saying what it is."""
    if path.is_file() and path.suffix == ".json" and is_table(path):
        return "benchmark"
    if (path / "cv_summary.json").is_file():
        return "cv"
    if (path / "ensemble.json").is_file():
        return "ensemble"
    if (path / "metrics.json").is_file() and (path / "config.yaml").is_file():
        return "run"
    if path.is_dir() and benchmark_files(path):
        return "benchmark"
    what = ("a cross-validation that has not finished (no cv_summary.json yet)" if (path / "cv_config.json").is_file()
            else "not found" if not path.exists() else "not a run, cross-validation, ensemble or benchmark output")
    raise UsageError(f"{path}: {what}; a report needs a directory of emodet train, cv or ensemble, or a "
                     "benchmark's JSON (bench/accuracy.py --json, bench/cross_corpus.py)")


def benchmark_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.json") if is_table(p))


def folds_phrase(n_folds: int, spec) -> str:
    """A cross-validation's folds in words: "10 folds (loso)", "3 folds (corpus)", "3 folds" (never "3 folds (3)")."""
    return f"{n_folds} folds" + ("" if str(spec).isdigit() else f" ({spec})")

@dataclass
class Evaluated:
    """The figures of one directory: ``block`` as in metrics.json (uar, wa, macro_f1, per_class,
    confusion_matrix), the predictions they come from, and the recordings' source."""

    kind: str
    path: Path
    labels: list
    block: dict | None
    predictions: list
    split: str  # what the figures are of, in words
    runs: list  # the run directories behind it: the run, the folds, or the members
    notes: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.resolve().name


def evaluated(path: str | Path) -> Evaluated:
    path = Path(path)
    kind = kind_of(path)
    if kind == "benchmark":
        raise UsageError(f"{path}: a benchmark's table has no predictions to compare; give runs or cross-validations")
    if kind == "cv":
        s = read_json(path / "cv_summary.json")
        runs = [path / f"fold_{f['fold']:02d}" for f in s["folds"]]
        return Evaluated(kind, path, s["pooled"]["labels"], s["pooled"], read_csv(path / "predictions_pooled.csv"),
                         f"pooled held-out predictions of {folds_phrase(s['n_folds'], s['folds_spec'])}", runs,
                         extra={"summary": s})
    if kind == "ensemble":
        return _ensemble(path)
    m = read_json(path / "metrics.json")
    for split, words in (("test", "held-out test speakers"), ("val", "validation speakers")):
        if split in m and (path / f"predictions_{split}.csv").is_file():
            notes = [] if split == "test" else [m.get("no_test_note", ""), "These are validation figures: the "
                                                "speakers were held out of training but not of model selection."]
            return Evaluated(kind, path, m["labels"], m[split], read_csv(path / f"predictions_{split}.csv"),
                             f"{words} ({', '.join(m[split]['speakers'])})", [path], [n for n in notes if n])
    return Evaluated(kind, path, m["labels"], None, [], "no held-out speakers", [path],
                     [m.get("no_test_note", "this run has neither a test nor a validation split")])


def _ensemble(path: Path) -> Evaluated:
    spec = read_json(path / "ensemble.json")
    figures, predictions = path / "eval_test.json", path / "eval_test_predictions.csv"
    if not (figures.is_file() and predictions.is_file()):
        from .evaluate import evaluate_directory  # torch: only for an ensemble not yet evaluated

        evaluate_directory(path, None, "test")
    m = read_json(figures)
    notes = [f"speakers {', '.join(m['seen_speakers'])} were seen in training by a member: these figures are not "
             "speaker-independent"] if m.get("seen_speakers") else []
    return Evaluated("ensemble", path, spec["labels"], m, read_csv(predictions),
                     f"test speakers of its members' split ({', '.join(m['speakers'])})",
                     [Path(r) for r in spec["runs"]], notes, extra={"spec": spec})


def headline(ev: Evaluated, seed: int = 0, draws: int = 1000) -> dict | None:
    """UAR, WA and macro-F1 as the directory's JSON gives them, each with its speaker-bootstrap interval."""
    if ev.block is None:
        return None
    ci = speaker_bootstrap(ev.predictions, ev.labels, draws=draws, seed=seed)
    out = {m: {**ci[m], "value": float(ev.block[m])} for m in METRICS}
    out.update({k: ci[k] for k in ("n_speakers", "draws", "seed", "level")})
    out["n"] = int(ev.block.get("n", len(ev.predictions)))
    out["recall"] = {lab: ev.block["per_class"][lab]["recall"] for lab in ev.labels if lab in ev.block["per_class"]}
    return out


def data_table(rows: list[dict], group: str, labels: list) -> dict:
    """Recordings of each label, speakers and minutes, one row a value of ``group`` (split or fold) and a total."""
    groups = sorted({r.get(group) or "" for r in rows}, key=_group_order)
    out = []
    for g in [*groups, None]:
        part = [r for r in rows if g is None or (r.get(group) or "") == g]
        minutes = sum(float(r["duration_s"]) for r in part if r.get("duration_s")) / 60
        name = "total" if g is None else f"fold {g}" if group == "cv_fold" else g or "(none)"
        out.append({"group": name, "counts": [sum(r["label"] == lab for r in part)
                    for lab in labels], "recordings": len(part), "speakers": sorted({r["speaker"] for r in part}),
                    "minutes": minutes})
    return {"labels": labels, "rows": out}


def _group_order(g: str) -> tuple:
    splits = ("train", "val", "test")
    return (0, splits.index(g), "") if g in splits else (1, int(g), "") if g.isdigit() else (2, 0, g)


def setup_of(ev: Evaluated) -> dict:
    """What was run: config, versions, data, normalisation and what it needs at deployment, time, size."""
    from .. import __version__

    first = read_json(ev.runs[0] / "metrics.json")
    members = [read_json(r / "metrics.json") for r in ev.runs]
    if ev.kind == "cv":
        recipe = read_json(ev.path / "cv_config.json")
        config_text = f"# cross-validation, folds: {recipe['folds']}\n" + yaml.safe_dump(recipe["recipe"], sort_keys=False, default_flow_style=None)
        manifest, group, group_name = ev.path / "manifest.csv", "cv_fold", "fold (held out)"
    else:
        config_text = _members_config(ev.runs) if ev.kind == "ensemble" else (ev.path / "config.yaml").read_text()
        manifest, group, group_name = ev.runs[0] / "manifest.csv", "split", "split"
    rows = read_csv(manifest) if manifest.is_file() else []
    mode = first["normalizer"].get("mode", "none")
    # an ensemble deploys every member; a cross-validation's folds are one recipe's models, each the size of one
    params = sum(m["parameters"] for m in members) if ev.kind == "ensemble" else first["parameters"]
    return {
        "config": config_text, "version_trained": first.get("emodet_version", "?"), "version_report": __version__,
        "corpus": ", ".join(sorted({r.get("corpus") or "" for r in rows} - {""})) or "(no corpus column)",
        "labels": ev.labels, "table": data_table(rows, group, ev.labels), "group_name": group_name,
        "normalize": mode, "needs": NEEDS_AT_DEPLOYMENT.get(mode, "see the run's normalizer"),
        "normalize_note": first.get("normalize_note"),
        "train_seconds": sum(float(m.get("train_seconds", 0)) for m in members), "n_trainings": len(members),
        "parameters": params, "megabytes": params * 4 / 1e6,
        "model": f"{first['model']['name']} ({first['model']['preset']})", "features": first["features"],
        "members": [str(r) for r in ev.runs] if ev.kind == "ensemble" else [],
    }


def _members_config(runs: list[Path]) -> str:
    """The first member's config, then what each other member's differs in."""
    from ..config import config_differences

    texts = [(r / "config.yaml").read_text() for r in runs]
    first = yaml.safe_load(texts[0])
    out = [f"# {runs[0]}\n{texts[0]}"]
    for run, text in zip(runs[1:], texts[1:]):
        other = yaml.safe_load(text)
        diff = {key: (other.get(key.split(".")[0]) or {}).get(key.split(".", 1)[1])
                for key in config_differences(first, other)}
        out.append(f"# {run}: as the first, except\n" + (yaml.safe_dump(diff, sort_keys=False) if diff else "# (nothing)\n"))
    return "\n".join(out)


def confusion_cells(cm: list[list[int]]) -> list[list[dict]]:
    """Each cell's count and its share of the row (the true class), for a table shaded by the share."""
    out = []
    for row in cm:
        total = sum(row)
        out.append([{"count": c, "share": c / total if total else 0.0} for c in row])
    return out
