"""How separable is the synthetic corpus? A simple classifier, leave-one-speaker-out.

    python bench/synth_separability.py [--per-class 12] [--speakers 8] [--seed 0]

Logistic regression (C=0.1) on per-utterance MFCC means and standard deviations (20
coefficients), standardised on the training speakers; each speaker held out once. Needs
scikit-learn (`pip install -e ".[bench]"`). Reference: chance UAR is 1 / number of classes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, confusion_matrix
from sklearn.preprocessing import StandardScaler

from emodet.core.audio import load_audio
from emodet.data.synth import SYNTH_LABELS, generate_corpus
from emodet.features import compute_feature


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=12)
    ap.add_argument("--speakers", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = generate_corpus(tmp, per_class=args.per_class, speakers=args.speakers, seed=args.seed)
        X = []
        for row in rows:
            m = compute_feature("mfcc", load_audio(Path(tmp) / row["path"]), 16000, {"n_mfcc": 20})
            X.append(np.r_[m.mean(1), m.std(1)])
    X = np.array(X)
    y = np.array([r["label"] for r in rows])
    g = np.array([r["speaker"] for r in rows])
    pred = np.empty_like(y)
    per_speaker = {}
    for spk in np.unique(g):
        test = g == spk
        scaler = StandardScaler().fit(X[~test])
        clf = LogisticRegression(C=0.1, max_iter=2000).fit(scaler.transform(X[~test]), y[~test])
        pred[test] = clf.predict(scaler.transform(X[test]))
        per_speaker[spk] = balanced_accuracy_score(y[test], pred[test])
    print(f"synthetic corpus: {len(rows)} files, {args.speakers} speakers, seed {args.seed}")
    print(f"LOSO UAR (mean over held-out speakers): {np.mean(list(per_speaker.values())):.3f}  "
          f"(chance {1 / len(SYNTH_LABELS):.2f})")
    print("per speaker: " + ", ".join(f"{k} {v:.2f}" for k, v in per_speaker.items()))
    labels = sorted(set(y))
    print("confusion (rows true, columns predicted):", ", ".join(labels))
    print(confusion_matrix(y, pred, labels=labels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
