"""Feature extraction speed: emodet's built-in front end beside the same pipeline with librosa.

    python bench/features.py [--data-root DIR] [--rounds 5]

Uses ../shared/datasets/emodb when present, else a synthetic corpus made on the fly. Every
figure is the median of several interleaved rounds on one thread, measured in this run:
  1. features only (decoded audio in memory): built-in logmel/mfcc vs librosa
  2. decode + resample to 16 kHz + features: emodet vs librosa.load + librosa.feature
  3. a cold cache build (`FeatureCache.build`, one process) in x real time
  4. reading a warm cache: every entry of the corpus, np.load and memory-mapped
Targets (issue 2): built-in features >= 2x librosa; cold build >= 1000x real time; warm read
of EmoDB (535 files) well under one second.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # one thread for numpy/BLAS too: a fair one-core comparison

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import librosa
import numpy as np
import torch

from emodet.core.audio import load_audio
from emodet.core.files import list_audio_files
from emodet.data.cache import FeatureCache
from emodet.features import compute_feature
from emodet.features.spectral import resolve_frame_params
from emodet.features import resolve_params

torch.set_num_threads(1)
SR = 16000
EMODB = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "emodb"


def librosa_feature(name: str, y: np.ndarray, p: dict) -> np.ndarray:
    S = librosa.feature.melspectrogram(y=y, sr=SR, n_fft=p["n_fft"], hop_length=p["hop_length"],
                                       win_length=p["win_length"], n_mels=p["n_mels"], fmin=p["fmin"], fmax=p["fmax"],
                                       pad_mode="constant")
    db = librosa.power_to_db(S, top_db=p["top_db"])
    return db if name == "logmel" else librosa.feature.mfcc(S=db, n_mfcc=p["n_mfcc"])


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", type=Path)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="emodet-bench-")
    root = args.data_root
    if root is None:
        if EMODB.is_dir():
            root = EMODB
        else:
            from emodet.data.synth import generate_corpus

            root = Path(tmp.name) / "synth"
            generate_corpus(root, per_class=12, speakers=8)
    files = [root / f for f in list_audio_files(root)]
    wavs = [load_audio(f, SR) for f in files]
    audio_s = sum(len(w) for w in wavs) / SR
    print(f"corpus: {root} ({len(files)} files, {audio_s / 60:.1f} min), torch threads {torch.get_num_threads()}, "
          f"median of {args.rounds} rounds\n")

    params = {name: resolve_frame_params(SR, resolve_params(name, {})) for name in ("logmel", "mfcc")}
    for name in ("logmel", "mfcc"):  # warm-up, and a parity check on real audio
        diff = np.abs(compute_feature(name, wavs[0], SR) - librosa_feature(name, wavs[0], params[name])).max()
        print(f"{name}: max |emodet - librosa| on {files[0].name}: {diff:.2e}")
    print()

    rows = []
    for name in ("logmel", "mfcc"):
        p = params[name]
        t_ours, t_ref, t_ours_full, t_ref_full = [], [], [], []
        for _ in range(args.rounds):
            t_ours.append(timed(lambda: [compute_feature(name, w, SR) for w in wavs]))
            t_ref.append(timed(lambda: [librosa_feature(name, w, p) for w in wavs]))
            t_ours_full.append(timed(lambda: [compute_feature(name, load_audio(f, SR), SR) for f in files]))
            t_ref_full.append(timed(lambda: [librosa_feature(name, librosa.load(f, sr=SR)[0], p) for f in files]))
        med = [statistics.median(t) for t in (t_ours, t_ref, t_ours_full, t_ref_full)]
        rows.append((f"{name} features only", audio_s / med[0], audio_s / med[1]))
        rows.append((f"{name} decode+resample+features", audio_s / med[2], audio_s / med[3]))

    print(f"{'one thread, x real time':<40}{'emodet':>12}{'librosa':>12}{'speed-up':>10}")
    for label, ours, ref in rows:
        print(f"{label:<40}{ours:>12,.0f}{ref:>12,.0f}{ours / ref:>9.2f}x")

    builds, reads, reads_mmap = [], [], []
    rels = list_audio_files(root)
    for i in range(args.rounds):
        cache = FeatureCache(Path(tmp.name) / f"cache{i}", "logmel")
        report = cache.build(root, progress=False)
        assert report.ok and report.computed == len(rels)
        builds.append(report.wall_seconds)
        reads.append(timed(lambda: [cache.get(root, r) for r in rels]))
        mm = FeatureCache(Path(tmp.name) / f"cache{i}", "logmel", mmap=True)
        reads_mmap.append(timed(lambda: [np.asarray(mm.get(root, r)) for r in rels]))
    build_s = statistics.median(builds)
    print(f"\ncold cache build (logmel, 1 process):   {build_s:.2f} s = {audio_s / build_s:,.0f}x real time (target >= 1000x)")
    print(f"warm cache read, {len(rels)} files (np.load): {statistics.median(reads) * 1e3:.0f} ms (target well under 1 s)")
    print(f"warm cache read, {len(rels)} files (mmap):    {statistics.median(reads_mmap) * 1e3:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
