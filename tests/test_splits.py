from collections import Counter

import numpy as np
import pytest

from emodet.data.manifest import check_speaker_independent, read_manifest, write_manifest
from emodet.data.splits import assign_splits, loso_folds, speaker_folds, speaker_independent_split
from emodet.core.errors import UsageError

LABELS = ["angry", "happy", "neutral", "sad"]


def make_rows(n_speakers=10, per_label=(5, 5, 5, 5), seed=0, jitter=False):
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_speakers):
        for lab, n in zip(LABELS, per_label):
            k = n + (int(rng.integers(-2, 3)) if jitter else 0)
            rows += [{"path": f"s{s}/{lab}{i}.wav", "label": lab, "speaker": f"s{s:02d}"} for i in range(max(k, 1))]
    return rows


def test_no_speaker_on_two_sides_and_same_seed_same_split():
    rows = make_rows(12, jitter=True)
    a = speaker_independent_split(rows, val=0.15, test=0.25, seed=3)
    assert a == speaker_independent_split(rows, val=0.15, test=0.25, seed=3)
    assert Counter(a.values()) == {"train": 7, "val": 2, "test": 3}
    assert any(speaker_independent_split(rows, 0.15, 0.25, seed=s) != a for s in range(4, 10))
    assign_splits(rows, 0.15, 0.25, folds=4, seed=3)
    check_speaker_independent(rows)
    for key in ("split", "fold", "loso_fold"):
        per_speaker = {}
        for r in rows:
            assert per_speaker.setdefault(r["speaker"], r[key]) == r[key]


def test_stratification_within_one_file_of_ideal():
    # Each speaker's label mix is identical, so the ideal is reachable exactly.
    rows = make_rows(10, per_label=(4, 3, 2, 1))
    split = speaker_independent_split(rows, val=0.1, test=0.2, seed=0)
    for name in ("train", "val", "test"):
        sel = [r for r in rows if split[r["speaker"]] == name]
        share = len(sel) / len(rows)
        got = Counter(r["label"] for r in sel)
        total = Counter(r["label"] for r in rows)
        for lab in LABELS:
            assert abs(got[lab] - total[lab] * share) <= 1.0
    # Speakers with skewed mixes: the search pairs them so the test set is still balanced.
    skewed = []
    for s, mix in enumerate([(6, 0, 3, 3), (0, 6, 3, 3), (3, 3, 3, 3), (3, 3, 3, 3), (3, 3, 3, 3), (3, 3, 3, 3)]):
        for lab, n in zip(LABELS, mix):
            skewed += [{"path": f"{s}/{lab}{i}", "label": lab, "speaker": f"p{s}"} for i in range(n)]
    split = speaker_independent_split(skewed, val=0, test=2, seed=1)
    test = Counter(r["label"] for r in skewed if split[r["speaker"]] == "test")
    assert all(abs(test[lab] - 6) <= 1 for lab in LABELS), test


def test_kfold_and_loso():
    rows = make_rows(10, jitter=True, seed=2)
    folds = speaker_folds(rows, 5, seed=0)
    assert sorted(Counter(folds.values()).values()) == [2, 2, 2, 2, 2]
    sizes = Counter(folds[r["speaker"]] for r in rows)
    assert max(sizes.values()) - min(sizes.values()) <= 6
    assert folds == speaker_folds(rows, 5, seed=0)
    loso = loso_folds(rows)
    assert sorted(loso.values()) == list(range(10)) and loso["s00"] == 0


def test_impossible_requests_say_why():
    rows = make_rows(2)
    with pytest.raises(UsageError, match=r"train/val/test split by speaker needs at least 3 speakers .* the data has 2 \(s00, s01\)"):
        speaker_independent_split(rows, val=0.1, test=0.2)
    assert set(speaker_independent_split(rows, val=0, test=1).values()) == {"train", "test"}
    with pytest.raises(UsageError, match="5 folds by speaker need at least 5 speakers; the data has 2"):
        speaker_folds(rows, 5)
    with pytest.raises(UsageError, match="--test must be a fraction"):
        speaker_independent_split(make_rows(5), test=-1)


def test_manifest_round_trip_and_refusals(tmp_path):
    rows = assign_splits(make_rows(5), val=1, test=1, folds=2)
    write_manifest(tmp_path / "m.csv", rows)
    back = read_manifest(tmp_path / "m.csv")
    assert [r["split"] for r in back] == [r["split"] for r in rows]
    text = (tmp_path / "m.csv").read_text().splitlines()
    header = text[0].split(",")
    assert header[:6] == ["path", "label", "speaker", "corpus", "duration_s", "split"]
    # one speaker on two sides is refused
    bad = text[:2] + [text[2].replace(",train,", ",test,") if ",train," in text[2] else text[2].replace(f",{rows[1]['split']},", ",train,")] + text[3:]
    (tmp_path / "bad.csv").write_text("\n".join(bad) + "\n")
    with pytest.raises(UsageError, match=r"speaker 's00' is in both"):
        read_manifest(tmp_path / "bad.csv")
    (tmp_path / "nocol.csv").write_text("file,label\nx.wav,sad\n")
    with pytest.raises(UsageError, match=r"missing column\(s\) path, speaker"):
        read_manifest(tmp_path / "nocol.csv")
    (tmp_path / "badsplit.csv").write_text("path,label,speaker,split\nx.wav,sad,a,training\n")
    with pytest.raises(UsageError, match="line 2: split 'training' is not one of train, val, test"):
        read_manifest(tmp_path / "badsplit.csv")
