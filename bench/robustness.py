"""Robustness: a model's speaker-independent UAR on clean recordings and on the same recordings degraded.

    python bench/robustness.py [--configs general~nap0 general~nap0~aug] [--corpus emodb]
    python bench/robustness.py --configs --cv-dirs runs/edge/student_loso     # a LOSO directory of emodet cv

Each config is cross-validated leave-one-speaker-out as bench/accuracy.py runs it (the same runs folder,
so finished folds are reused); every fold's model then predicts its held-out speaker's recordings clean
and degraded: telephone band; pink noise and babble (other training speakers' recordings) at 20, 10 and
0 dB SNR; reverberation in simulated rooms of RT60 0.3, 0.6 and 1.0 s; MP3 at 32 kb/s; Opus at 16 kb/s;
-30 dB gain, in float and written to 16 bits (a quiet file: its quantisation floor rises 30 dB towards
the speech); clipping at 30% of the peak; and babble of voices neither trained on nor tested ("babble
unheard": 48 recordings of another corpus, by default nEMO's Polish speakers, --unheard-babble DIR). Degradations are seeded (the same for every model). A config
name takes bench/accuracy.py's variants, e.g. ~aug: training.augment.waveform.copies=2 (noise, rooms, codecs
and gain on the training copies; never on the test recordings), ~babtr: their babble from the fold's other
training speakers (training.augment.waveform.babble_from=training), ~nap0: data.nap=0. Pooled UAR of each condition and its drop from clean.
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from pathlib import Path

import numpy as np

from emodet.core.audio import load_audio
from emodet.core.errors import EmodetError
from emodet.data import augment
from emodet.data.manifest import read_manifest, resolve_path
from emodet.data.normalize import Normalizer
from emodet.evaluation.metrics import classification_metrics

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from accuracy import CORPORA  # noqa: E402  (the accuracy bench's corpora and runs)

SR = 16000
CONDITIONS = ["clean", "telephone", *(f"pink {s} dB" for s in (20, 10, 0)), *(f"babble {s} dB" for s in (20, 10, 0)),
              *(f"reverb RT60 {t} s" for t in (0.3, 0.6, 1.0)), "MP3 32 kb/s", "Opus 16 kb/s", "gain -30 dB",
              "gain -30 dB, 16-bit", "clipping 30%"]
UNHEARD = [f"babble unheard {s} dB" for s in (20, 10, 0)]  # voices of another corpus (--unheard-babble)
_UNHEARD_POOL: list[np.ndarray] = []


def unheard_pool(folder: Path, count: int = 48) -> list[np.ndarray]:
    """``count`` recordings spread evenly over ``folder``'s sorted audio files (voices of another corpus)."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".wav", ".flac"))
    if len(files) < 6:
        raise EmodetError(f"--unheard-babble {folder}: {len(files)} .wav/.flac files; babble needs at least 6")
    return [load_audio(files[i], SR) for i in np.linspace(0, len(files) - 1, min(count, len(files))).astype(int)]


def degrade(wav: np.ndarray, condition: str, seed: int, pool: list[np.ndarray]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if condition == "clean":
        return wav
    if condition == "telephone":
        return augment.codec(wav, SR, "telephone")
    if condition.startswith(("pink", "babble")):
        snr = float(condition.split()[-2])
        noise = None
        if condition.startswith("babble"):
            voices = _UNHEARD_POOL if condition.startswith("babble unheard") else pool
            if not voices:  # no voices would add no noise: a clean recording under a noisy name
                raise EmodetError(f"{condition}: no babble voices loaded")
            noise = augment.babble(voices, len(wav), rng)
        return augment.add_noise(wav, SR, snr, rng, kind="pink", noise=noise)
    if condition.startswith("reverb"):
        return augment.reverberate(wav, SR, augment.room_impulse_response(SR, float(condition.split()[2]), seed % 8))
    if condition.startswith("MP3"):
        return augment.codec(wav, SR, "mp3", 32)
    if condition.startswith("Opus"):
        return augment.codec(wav, SR, "opus", 16)
    if condition.startswith("gain"):
        quiet = augment.gain(wav, -30.0)
        return np.round(quiet * 32768).clip(-32768, 32767).astype(np.float32) / 32768 if "16-bit" in condition else quiet
    return augment.clip(wav, 0.3)


_FEATURES: dict = {}


def fold_predictions(fold: Path, conditions: list[str]) -> tuple[dict[str, list[int]], list[int], list[str]]:
    """Predicted label indices of a fold's held-out recordings under each condition, and the true ones."""
    import torch

    from emodet.features import compute_feature
    from emodet.runs import load_predictor, load_run

    info = load_run(fold)
    if info.normalize not in ("global", "none"):
        raise EmodetError(f"{fold}: normalised per {info.normalize}; this bench runs models that need nothing")
    model = load_predictor(fold)
    rows = read_manifest(fold / "manifest.csv")
    test = [r for r in rows if r["split"] == "test"]
    train = [r for r in rows if r["split"] == "train"][::10]
    pool = [load_audio(resolve_path(r["path"], info.data_root, fold / "manifest.csv")) for r in train]
    normalize = Normalizer.from_dict(info.normalizer)  # the run's statistics and projection, as training applied them
    out = {c: [] for c in conditions}
    for r in test:
        clean = load_audio(resolve_path(r["path"], info.data_root, fold / "manifest.csv"), SR)
        seed = zlib.crc32(r["path"].encode())
        for c in conditions:
            key = (fold.name, r["path"], c, info.feature, json.dumps(info.feature_params, sort_keys=True))
            if key not in _FEATURES:  # the same degraded recording for every config with these features
                _FEATURES[key] = compute_feature(info.feature, degrade(clean, c, seed, pool), SR, info.feature_params)
            feats = _FEATURES[key]
            x = torch.from_numpy(normalize(feats)[None].astype(np.float32))
            with torch.no_grad():
                out[c].append(int(model(x, torch.tensor([x.shape[-1]])).argmax(1)))
    return out, [info.labels.index(r["label"]) for r in test], info.labels


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="*", default=["general~nap0", "general~nap0~aug"])
    ap.add_argument("--corpus", default="emodb", choices=sorted(CORPORA))
    ap.add_argument("--runs-dir", type=Path, default=Path("runs") / "bench_accuracy")
    ap.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "emodet-bench")
    ap.add_argument("--cv-dirs", nargs="*", type=Path, default=[], metavar="DIR",
                    help="leave-one-speaker-out directories of `emodet cv` (e.g. an edge student) measured the same way")
    ap.add_argument("--unheard-babble", type=Path, default=None, metavar="DIR",
                    help="recordings of voices no model heard, for the 'babble unheard' conditions (default: nEMO's "
                         "in ../shared/datasets, the conditions left out when it is absent; not unheard for a model "
                         "distilled with those recordings as --unlabelled)")
    args = ap.parse_args()
    conditions = list(CONDITIONS)
    unheard = args.unheard_babble or REPO.parent / "shared" / "datasets" / "nemo" / "audio"
    if unheard.is_dir():
        _UNHEARD_POOL[:] = unheard_pool(unheard)
        conditions += UNHEARD
    elif args.unheard_babble is not None:
        raise EmodetError(f"--unheard-babble {unheard}: no such folder")
    else:
        print(f"{unheard} not found: the 'babble unheard' conditions are left out")
    import subprocess

    results = {}
    systems = {}
    for config in args.configs:  # cross-validate through the accuracy bench (reuses finished folds)
        done = subprocess.run([sys.executable, str(REPO / "bench" / "accuracy.py"), "--corpus", args.corpus,
                               "--configs", config, "--runs-dir", str(args.runs_dir), "--cache-dir", str(args.cache_dir)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise EmodetError(f"bench/accuracy.py for {config} failed: {done.stderr.strip()[-500:]}")
        systems[config] = args.runs_dir / f"{args.corpus}_{config.replace('@', '_seed').replace('~', '_')}"
    systems.update({str(d): d for d in args.cv_dirs})
    for config, cv_dir in systems.items():
        predicted, truth = {c: [] for c in conditions}, []
        for fold in sorted(cv_dir.glob("fold_*")):
            got, true, labels = fold_predictions(fold, conditions)
            truth += true
            for c in conditions:
                predicted[c] += got[c]
        results[config] = {c: classification_metrics(truth, predicted[c], labels)["uar"] for c in conditions}
        print(f"{config}: " + ", ".join(f"{c} {v:.3f}" for c, v in results[config].items()), flush=True)
    print(f"\n{args.corpus}, leave-one-speaker-out, pooled UAR (drop from clean, points)")
    print(f"{'condition':<22}" + "".join(f"{c:>32}" for c in results))
    for c in conditions:
        cells = [f"{r[c]:.3f} ({100 * (r[c] - r['clean']):+.1f})" for r in results.values()]
        print(f"{c:<22}" + "".join(f"{cell:>32}" for cell in cells))
    out = args.runs_dir / f"robustness_{args.corpus}.json"  # earlier systems' figures kept beside these
    earlier = json.loads(out.read_text()) if out.is_file() else {}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**earlier, **results}, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except EmodetError as exc:
        sys.exit(f"{Path(__file__).name}: error: {exc}")
