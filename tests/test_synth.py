import csv

import numpy as np
import pytest
import soundfile as sf

from emodet.data.synth import SYNTH_LABELS, generate_corpus, make_speakers, synthesize_utterance
from emodet.core.errors import UsageError
from emodet.features import compute_feature


def test_layout_metadata_and_audio(synth_corpus):
    rows = list(csv.DictReader(open(synth_corpus / "metadata.csv")))
    assert len(rows) == 5 * 3 * 3
    for row in rows:
        path = synth_corpus / row["path"]
        assert path.parent.name == row["label"] and path.name.startswith(row["speaker"] + "_")
        info = sf.info(path)
        assert info.samplerate == 16000 and info.channels == 1
        assert 0.8 < info.duration < 6.0 and abs(info.duration - float(row["duration_s"])) < 1e-3
    assert {r["label"] for r in rows} == set(SYNTH_LABELS)
    assert len({r["speaker"] for r in rows}) == 3


def test_same_seed_same_audio_and_larger_corpus_extends(tmp_path, synth_corpus):
    generate_corpus(tmp_path / "a", per_class=4, speakers=3, seed=1)
    for rel in ("sad/spk02_sad_001.wav", "angry/spk03_angry_002.wav"):
        np.testing.assert_array_equal(sf.read(tmp_path / "a" / rel)[0], sf.read(synth_corpus / rel)[0])
    generate_corpus(tmp_path / "b", per_class=1, speakers=1, seed=2)
    assert not np.array_equal(sf.read(tmp_path / "b/sad/spk01_sad_000.wav")[0][:1000],
                              sf.read(synth_corpus / "sad/spk01_sad_000.wav")[0][:1000])


def test_classes_differ_the_way_acted_emotions_do():
    spk = make_speakers(2, 0)[0]
    stats = {}
    for label in SYNTH_LABELS:
        levels, tilts, durs = [], [], []
        for i in range(6):
            wav = synthesize_utterance(spk, label, np.random.default_rng([3, i, len(label)]))
            power = np.abs(np.fft.rfft(wav)) ** 2
            freqs = np.fft.rfftfreq(len(wav), 1 / 16000)
            levels.append(20 * np.log10(np.sqrt(np.mean(wav**2))))
            high, low = power[(freqs > 2000) & (freqs < 5000)].sum(), power[(freqs > 100) & (freqs < 1000)].sum()
            tilts.append(10 * np.log10(high / low))
            durs.append(len(wav) / 16000)
        stats[label] = np.mean(levels), np.mean(tilts), np.mean(durs)
    assert stats["angry"][0] > stats["neutral"][0] > stats["sad"][0]  # loudness
    assert stats["angry"][1] > max(stats["neutral"][1], stats["sad"][1])  # effort brightens the voice
    assert stats["sad"][2] > stats["neutral"][2] > stats["fearful"][2]  # tempo


def test_simple_classifier_separates_held_out_speakers_clearly_not_perfectly(tmp_path):
    """Nearest class mean on standardised MFCC statistics, trained on 4 speakers, tested on 2 others."""
    rows = generate_corpus(tmp_path, per_class=6, speakers=6, seed=0)
    X, y, spk = [], [], []
    for row in rows:
        m = compute_feature("mfcc", sf.read(tmp_path / row["path"], dtype="float32")[0], 16000, {"n_mfcc": 20})
        X.append(np.r_[m.mean(1), m.std(1)])
        y.append(SYNTH_LABELS.index(row["label"]))
        spk.append(row["speaker"])
    X, y, spk = np.array(X), np.array(y), np.array(spk)
    test = np.isin(spk, ["spk05", "spk06"])
    mu, sd = X[~test].mean(0), X[~test].std(0) + 1e-9
    Z = (X - mu) / sd
    centroids = np.stack([Z[~test & (y == c)].mean(0) for c in range(5)])
    pred = np.argmin(((Z[test][:, None] - centroids[None]) ** 2).sum(-1), 1)
    uar = np.mean([(pred[y[test] == c] == c).mean() for c in range(5)])
    assert 0.45 <= uar <= 0.95, uar  # chance is 0.20


def test_bad_arguments():
    with pytest.raises(UsageError, match="at least 1"):
        generate_corpus("/tmp/never", per_class=0)
    with pytest.raises(UsageError, match="no label 'bored'"):
        generate_corpus("/tmp/never", labels=("bored",))
