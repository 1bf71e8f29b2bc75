"""``emodet demo``: the whole path on the built-in synthetic corpus, no download needed."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from .data.cache import FeatureCache
from .data.synth import generate_corpus
from .io import atomic_write_json

DEMO_FEATURE = "logmel"


def run_demo(out: str | Path, per_class: int = 12, speakers: int = 8, seed: int = 0) -> int:
    """Synthesise a corpus under ``out/corpus``, cache its features under ``out/cache``, print a summary."""
    out = Path(out)
    corpus = out / "corpus"
    settings = {"per_class": per_class, "speakers": speakers, "seed": seed}
    marker = corpus / "synth.json"
    start = time.perf_counter()
    if marker.exists() and json.loads(marker.read_text()) == settings:
        import csv

        with open(corpus / "metadata.csv", newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        print(f"[1/2] synthetic corpus already in {corpus} ({len(rows)} files)")
    else:
        rows = generate_corpus(corpus, per_class=per_class, speakers=speakers, seed=seed)
        atomic_write_json(marker, settings)
        print(f"[1/2] synthesised {len(rows)} files in {time.perf_counter() - start:.1f} s -> {corpus}")
    cache = FeatureCache(out / "cache", DEMO_FEATURE)
    report = cache.build(corpus)
    print(f"[2/2] {report.summary_line()}")

    labels = Counter(r["label"] for r in rows)
    minutes = sum(float(r["duration_s"]) for r in rows) / 60
    first = cache.load(corpus, rows[0]["path"])
    print()
    print(f"{'corpus':<22}{len(rows)} files, {minutes:.1f} min, {len({r['speaker'] for r in rows})} speakers")
    print(f"{'labels':<22}" + ", ".join(f"{k} {v}" for k, v in sorted(labels.items())))
    print(f"{'feature':<22}{DEMO_FEATURE} {first.shape[0]} x frames (e.g. {first.shape} for {rows[0]['path']})")
    print(f"{'cache':<22}{cache.dir}")
    print(f"{'cache build':<22}{report.computed} computed, {report.cached} reused, {len(report.failed)} failed")
    return 0 if report.ok else 1
