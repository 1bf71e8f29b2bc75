"""One self-contained HTML page for a run, a cross-validation, an ensemble or a benchmark's table.

    write_report("runs/cnn_v1")                                        # -> runs/cnn_v1/report.html
    write_report("runs/cnn_cv", compare=["runs/fc_cv"], audio="link")  # side by side; players link the audio

Everything is in the one file (figures as inline SVG, audio as base64 FLAC, styles inline): it opens
from disk, names no URL, prints to PDF from the browser and reads in a narrow window. The template is
``templates/report.html.j2`` (Jinja2); the parts come from ``report_parts`` (figures and what was run),
``report_review`` (confidence, mistakes, audio) and ``report_figures`` (the SVG figures).
"""

from __future__ import annotations

import datetime
import json
import math
import re
from pathlib import Path

from ..core.errors import UsageError
from ..core.io import atomic_write_text
from .metrics import per_group_uar
from .report_figures import curves_svg, reliability_svg, speakers_svg
from .report_parts import (KINDS, benchmark_files, confusion_cells, evaluated, headline, kind_of, read_json,
                           setup_of)
from .report_review import AUDIO_MODES, MAX_MISTAKES, MAX_SECONDS, confidence_of, mistakes_of

# anything the browser would fetch from elsewhere: a URL in an attribute or in CSS
_FETCHES = re.compile(r"""(?:\b(?:src|href|action|poster|srcset|data)\s*=\s*["']?\s*|url\(\s*["']?|@import\s+["']?)"""
                      r"(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)


def write_report(path: str | Path, out: str | Path | None = None, compare=(), audio: str = "embed",
                 seed: int = 0) -> Path:
    """Write the report of ``path`` (a run, cross-validation or ensemble directory, or a benchmark's JSON or
    its folder) to ``out`` (default: ``report.html`` in the directory; beside a benchmark's JSON) atomically.

    ``compare``: more runs, cross-validations or ensembles shown beside it in one table. ``audio``: the
    worst mistakes' recordings ``embed``-ded in the page, ``link``-ed (paths relative to the report) or
    ``none``. ``seed``: of the speaker bootstrap behind every interval. Returns the page's path."""
    if audio not in AUDIO_MODES:
        raise UsageError(f"audio {audio!r}: valid values are {', '.join(AUDIO_MODES)}")
    path = Path(path)
    kind = kind_of(path)
    if kind == "benchmark":
        if compare:
            raise UsageError(f"{path} is a benchmark's table; --compare takes runs and cross-validations")
        source = path if path.is_file() else _one_benchmark(path)
        out = Path(out) if out else source.with_suffix(".html")
        context = benchmark_context(source)
    else:
        out = Path(out) if out else path / "report.html"
        context = run_context(path, audio, out.parent, seed)
        if compare:
            context["compare"] = compare_rows([path, *compare], seed)
    html = render(context)
    if _FETCHES.search(html):  # the page must open with no network: the template and parts never link out
        raise RuntimeError(f"report of {path} would fetch {_FETCHES.search(html).group(0)!r}: a bug in emodet's report")
    atomic_write_text(out, html)
    return out


def _one_benchmark(folder: Path) -> Path:
    found = benchmark_files(folder)
    if len(found) != 1:
        raise UsageError(f"{folder} holds {len(found)} benchmark tables ({', '.join(p.name for p in found)}); "
                         "give the JSON file itself")
    return found[0]


def run_context(path: Path, audio: str, out_dir: Path, seed: int) -> dict:
    ev = evaluated(path)
    head = headline(ev, seed)
    ctx = {"kind": ev.kind, "kind_name": KINDS[ev.kind], "name": ev.name, "path": str(path), "split": ev.split,
           "notes": ev.notes, "labels": ev.labels, "headline": head, "setup": setup_of(ev), "curves_svg": curves_svg(ev),
           "max_mistakes": MAX_MISTAKES, "max_seconds": MAX_SECONDS, "audio_mode": audio}
    if ev.kind == "cv":
        s = ev.extra["summary"]
        ctx["folds"] = {"rows": s["folds"], "uar_mean": s["uar_mean"], "uar_std": s["uar_std"],
                        "wa_mean": s.get("wa_mean"), "macro_f1_mean": s.get("macro_f1_mean")}
    if ev.kind == "ensemble":
        spec = ev.extra["spec"]
        ctx["members"] = compare_rows([*ev.runs, path], seed)
        ctx["fusion"] = {"combine": spec.get("combine", "prob"), "weights": spec.get("weights")}
    if ev.block is not None:
        per_speaker = per_group_uar(ev.predictions, ev.labels)
        counts = {s: sum(r["speaker"] == s for r in ev.predictions) for s in per_speaker}
        ctx.update({"per_class": [{"label": lab, **ev.block["per_class"][lab]} for lab in ev.labels],
                    "confusion": confusion_cells(ev.block["confusion_matrix"]),
                    "per_speaker": [{"speaker": s, "uar": u, "n": counts[s]} for s, u in per_speaker.items()],
                    "speakers_svg": speakers_svg(per_speaker, len(ev.labels), ev.split.split(" (")[0]),
                    "mistakes": mistakes_of(ev, audio, out_dir), "n_wrong": sum(r["label"] != r["predicted"]
                                                                                for r in ev.predictions)})
        conf = confidence_of(ev)
        if conf["calibrated"]:
            conf["svg"] = reliability_svg(conf, f"{ev.name}: {conf['judged_on'].split(' (')[0]}")
        ctx["confidence"] = conf
    ctx["data"] = {"kind": ev.kind, "name": ev.name, "labels": ev.labels, "split": ev.split, "headline": head,
                   "per_speaker": {r["speaker"]: r["uar"] for r in ctx.get("per_speaker", [])},
                   "ece": {k: ctx["confidence"].get(k) for k in ("ece_before", "ece_after", "temperature")}
                   if ctx.get("confidence", {}).get("calibrated") else None}
    return ctx


def compare_rows(paths, seed: int = 0) -> dict:
    """Headline figures with intervals and per-class recall of several directories, one row each."""
    rows, labels = [], []
    for p in paths:
        ev = evaluated(p)
        labels += [lab for lab in ev.labels if lab not in labels]
        rows.append({"name": ev.name, "path": str(p), "kind": KINDS[ev.kind], "split": ev.split,
                     "headline": headline(ev, seed), "setup": setup_of(ev)})
    return {"labels": labels, "rows": rows}


def benchmark_context(source: Path) -> dict:
    """A benchmark's table (``{"rows": {system: {column: value}}, ...}``) with its reference rows."""
    data = read_json(source)
    rows, refs = dict(data["rows"]), dict(data.get("references") or {})
    if not refs:  # bench/cross_corpus.py names its reference rows
        refs = {k: v for k, v in rows.items() if "reference" in k.lower()}
        rows = {k: v for k, v in rows.items() if k not in refs}
    corpora = list(data.get("corpora") or [])
    columns = list(data.get("columns") or corpora or dict.fromkeys(c for v in rows.values() for c in v))
    if corpora and "mean" not in columns:
        columns.append("mean")
        for values in (*rows.values(), *refs.values()):
            values["mean"] = sum(values[c] for c in corpora) / len(corpora) if all(c in values for c in corpora) \
                else None
    return {"kind": "benchmark", "kind_name": "benchmark", "name": data.get("title") or source.stem,
            "path": str(source), "benchmark": {"columns": columns, "rows": rows, "references": refs,
                                               "labels": data.get("labels"), "notes": data.get("notes", []),
                                               "formats": data.get("formats", {})},
            "data": {"kind": "benchmark", "rows": rows, "references": refs, "columns": columns}}


def _f3(x) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _cell(x, fmt: str | None = None) -> str:
    """A benchmark table's value: as its column's format says, else shares with 3 decimals and counts with
    thousands separators."""
    if fmt and isinstance(x, (int, float)) and not isinstance(x, bool):
        return format(x, fmt)
    if isinstance(x, bool) or x is None:
        return "" if x is None else str(x)
    if isinstance(x, int):
        return f"{x:,}"
    return _f3(x) if isinstance(x, float) else str(x)


def render(context: dict) -> str:
    import jinja2
    from markupsafe import Markup

    from .. import __version__

    env = jinja2.Environment(loader=jinja2.PackageLoader("emodet.evaluation", "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters.update(f3=_f3, cell=_cell, svg=Markup)
    data = json.dumps(context.pop("data"), default=float).replace("</", "<\\/")
    return env.get_template("report.html.j2").render(
        **context, version=__version__, data_json=Markup(data),
        generated=datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))
