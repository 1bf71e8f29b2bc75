"""Memory of the streaming dataset stays flat when the manifest grows 20x.

    python bench/streaming_memory.py [--base-rows 480] [--growth 20]

Makes a synthetic corpus, writes manifests of N and 20N rows (rows repeat the corpus'
files), and in a fresh process for each iterates one epoch through a DataLoader (batch 16,
features computed on the fly), reporting the peak resident memory of that process. The
reference beside it is the map-style ``FeatureDataset`` with ``preload=True``, whose
memory grows with the corpus.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LABELS = ["neutral", "happy", "sad", "angry", "fearful"]


def child(kind: str, manifest: str, root: str, cache_dir: str) -> None:
    import torch
    from torch.utils.data import DataLoader

    from emodet.data.cache import FeatureCache
    from emodet.data.dataset import FeatureDataset, pad_collate
    from emodet.data.manifest import read_manifest
    from emodet.data.streaming import StreamingDataset

    torch.set_num_threads(1)
    start = time.perf_counter()
    if kind == "streaming":
        ds = StreamingDataset(manifest, LABELS, root=root, shuffle_buffer=64)
    else:
        ds = FeatureDataset(read_manifest(manifest), root, FeatureCache(cache_dir, "logmel"), LABELS, preload=True)
    n = 0
    for x, y, lengths in DataLoader(ds, batch_size=16, collate_fn=pad_collate):
        n += len(y)
    if kind != "streaming":  # preload keeps every item: touch them all again to show it
        n = sum(1 for i in range(len(ds)) if ds.raw_features(i) is not None)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"items": n, "peak_mb": peak_mb, "seconds": time.perf_counter() - start}))


def run(kind: str, manifest: Path, root: Path, cache_dir: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, str(manifest), str(root), str(cache_dir)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=12)
    ap.add_argument("--speakers", type=int, default=8)
    ap.add_argument("--growth", type=int, default=20)
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return 0
    from emodet.data.cache import FeatureCache
    from emodet.data.synth import generate_corpus

    with tempfile.TemporaryDirectory(prefix="emodet-stream-") as tmp:
        tmp = Path(tmp)
        rows = generate_corpus(tmp / "corpus", per_class=args.per_class, speakers=args.speakers)
        FeatureCache(tmp / "cache", "logmel").build(tmp / "corpus", progress=False)
        manifests = {}
        for factor in (1, args.growth):
            path = tmp / f"manifest_x{factor}.csv"
            with open(path, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=["path", "label", "speaker"], extrasaction="ignore")
                writer.writeheader()
                for _ in range(factor):
                    writer.writerows(rows)
            manifests[factor] = path
        print(f"corpus: {len(rows)} files; manifests of {len(rows)} and {len(rows) * args.growth} rows\n")
        print(f"{'dataset':<34}{'rows':>8}{'peak RSS MB':>14}{'seconds':>10}")
        results = {}
        for kind in ("streaming", "map-style preload"):
            for factor, path in manifests.items():
                r = run("streaming" if kind == "streaming" else "map", path, tmp / "corpus", tmp / "cache")
                results[(kind, factor)] = r
                print(f"{kind:<34}{r['items']:>8}{r['peak_mb']:>14.0f}{r['seconds']:>10.1f}")
        s1, s20 = results[("streaming", 1)]["peak_mb"], results[("streaming", args.growth)]["peak_mb"]
        m1, m20 = results[("map-style preload", 1)]["peak_mb"], results[("map-style preload", args.growth)]["peak_mb"]
        print(f"\nstreaming: {args.growth}x the rows -> {s20 / s1:.2f}x the peak memory (+{s20 - s1:.0f} MB)")
        print(f"map-style preload (reference): {args.growth}x the rows -> {m20 / m1:.2f}x (+{m20 - m1:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
