"""Waveform augmentation (emodet.data.augment): each transform on small signals made here, with its numbers."""

import numpy as np
import pytest

from emodet.core.errors import UsageError
from emodet.data import augment
from emodet.data.augment import AugmentCopy, add_noise, clip, codec, coloured_noise, gain, reverberate

SR = 16000


def voice(seconds=2.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    f0 = 150 + 20 * np.sin(2 * np.pi * 1.5 * t)
    x = sum(np.sin(k * 2 * np.pi * np.cumsum(f0) / SR) / k for k in range(1, 20))
    x *= 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    return (0.2 * x / np.abs(x).max() + 0.001 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.mark.parametrize("kind", ["white", "pink", "brown"])
@pytest.mark.parametrize("snr", [20.0, 10.0, 0.0])
def test_noise_reaches_the_asked_snr(kind, snr):
    clean = voice()
    noisy = add_noise(clean, SR, snr, np.random.default_rng(1), kind=kind)
    noise = noisy - clean
    achieved = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
    assert abs(achieved - snr) < 0.5 and noisy.dtype == np.float32 and len(noisy) == len(clean)


def test_noise_colours_have_their_spectral_slopes():
    rng = np.random.default_rng(0)
    for kind, slope in (("white", 0.0), ("pink", -1.0), ("brown", -2.0)):
        n = coloured_noise(2**16, kind, rng)
        f, p = __import__("scipy.signal", fromlist=["welch"]).welch(n, SR, nperseg=4096)
        band = (f > 100) & (f < 4000)
        fitted = np.polyfit(np.log10(f[band]), np.log10(p[band]), 1)[0]
        assert abs(fitted - slope) < 0.15, (kind, fitted)
        assert np.mean(n.astype(np.float64) ** 2) == pytest.approx(1.0, rel=1e-3)


def test_babble_and_folder_noise_reach_the_snr_too():
    clean = voice()
    pool = [voice(1.3, seed=s) for s in range(5)]
    talkers = augment.babble(pool, len(clean), np.random.default_rng(2))
    noisy = add_noise(clean, SR, 5.0, np.random.default_rng(3), noise=talkers)
    noise = noisy - clean
    assert abs(10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2)) - 5) < 0.5


def schroeder_rt60(rir: np.ndarray, sr: int) -> float:
    """RT60 from the energy decay curve's slope between -5 and -25 dB (T20, doubled)."""
    energy = np.cumsum((rir.astype(np.float64) ** 2)[::-1])[::-1]
    edc = 10 * np.log10(energy / energy[0] + 1e-30)
    t5, t25 = np.argmax(edc <= -5), np.argmax(edc <= -25)
    return 3 * (t25 - t5) / sr


@pytest.mark.parametrize("rt60", [0.3, 0.6, 1.0])
def test_simulated_rooms_decay_at_their_rt60(rt60):
    pytest.importorskip("pyroomacoustics")
    rir = augment.room_impulse_response(SR, rt60, 0)
    assert np.argmax(np.abs(rir)) == 0 and rir.dtype == np.float32
    assert schroeder_rt60(rir, SR) == pytest.approx(rt60, rel=0.3)
    wet = reverberate(voice(), SR, rir)
    assert len(wet) == 2 * SR and np.mean(wet ** 2) == pytest.approx(np.mean(voice() ** 2), rel=1e-3)


@pytest.mark.parametrize("kind,kbps", [("mp3", 32), ("opus", 16), ("telephone", None), ("gsm", None)])
def test_codec_round_trip_keeps_length_and_most_of_the_signal(kind, kbps):
    clean = voice()
    out = codec(clean, SR, kind, kbps)
    assert len(out) == len(clean) and out.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(out))
    freqs = np.fft.rfftfreq(len(out), 1 / SR)
    if kind in ("telephone", "gsm"):  # the narrow band: nothing above 4 kHz survives
        assert spectrum[freqs > 4200].sum() < 0.01 * spectrum.sum()
    band = (freqs > 400) & (freqs < 3200)  # what every channel passes: the same spectrum, up to level
    smooth = np.ones(64) / 64
    ours, theirs = (np.convolve(np.abs(np.fft.rfft(s)), smooth, "same")[band] for s in (out, clean))
    corr = np.corrcoef(np.log(ours + 1e-6), np.log(theirs + 1e-6))[0, 1]
    assert corr > 0.9, (kind, corr)


def test_codec_bit_rates_are_what_was_asked():
    level = augment._compression_level("mp3", SR, 32.0)
    size = len(augment._encode(voice(4.0), SR, "mp3", level)) * 8 / 4 / 1000
    assert 28 <= size <= 36


def test_gain_and_clipping():
    x = voice()
    np.testing.assert_allclose(gain(x, -20.0), x * 0.1, rtol=1e-6)
    c = clip(x, 0.5)
    assert np.abs(c).max() == pytest.approx(0.5 * np.abs(x).max()) and np.mean(np.abs(c) < np.abs(x)) > 0.01


def test_a_copy_is_the_same_for_the_same_seed_copy_and_file():
    spec = {"copies": 2, "noise": 1.0, "snr_db": [5, 15], "noise_kinds": ["pink", "white"], "noise_dir": None,
            "reverb": 0.0, "rt60": [0.3, 0.6], "rir_dir": None, "codec": 0.5, "gain": 0.5}
    x = voice()
    a = AugmentCopy(spec, 0, seed=7)
    np.testing.assert_array_equal(a(x, SR, "/data/a.wav"), AugmentCopy(spec, 0, seed=7)(x, SR, "/data/a.wav"))
    assert not np.allclose(a(x, SR, "/data/a.wav"), AugmentCopy(spec, 1, seed=7)(x, SR, "/data/a.wav"))
    assert not np.allclose(a(x, SR, "/data/a.wav"), a(x, SR, "/data/b.wav"))
    assert not np.allclose(a(x, SR, "/data/a.wav"), AugmentCopy(spec, 0, seed=8)(x, SR, "/data/a.wav"))
    assert a.key() != AugmentCopy(spec, 1, seed=7).key()


@pytest.mark.filterwarnings("ignore:the validation split is too small")
def test_babble_from_training_speakers_never_holds_the_own_or_a_held_out_voice(tmp_path, synth_corpus):
    """babble_from: training: a copy's babble is drawn from the run's training recordings of other speakers
    (never the recording's own speaker, never a validation or test speaker), the same for the same seed; the
    training set is in the cache key (each fold its own copies); the default keeps the synthetic voices and
    the key it always had."""
    from emodet.config import check_training_start, load_config
    from emodet.data import augment
    from emodet.data.checks import DataWarning
    from emodet.data.prepare import prepare_data

    sets = ["data.corpus=folder", "data.split.test=1", "data.split.val=0", "features.type=mfcc",
            f"features.cache_dir={tmp_path / 'cache'}", "training.augment.waveform.copies=1",
            "training.augment.waveform.noise=1", "training.augment.waveform.noise_kinds=[babble]",
            "training.augment.waveform.reverb=0", "training.augment.waveform.codec=0", "training.augment.waveform.gain=0"]
    synthetic = prepare_data(load_config(None, sets, data_root=str(synth_corpus)))
    assert "talkers" not in synthetic.variant_caches["aug0"].augment.key()
    assert "babble_from" not in synthetic.variant_caches["aug0"].augment.key()["spec"]
    with pytest.warns(DataWarning, match="mixes voices of only 1 other speaker"):  # 2 training speakers: thin babble
        data = prepare_data(load_config(None, [*sets, "training.augment.waveform.babble_from=training"],
                                        data_root=str(synth_corpus)))
    copy = data.variant_caches["aug0"].augment
    speakers = {r["split"]: set() for r in data.rows}
    for r in data.rows:
        speakers[r["split"]].add(r["speaker"])
    assert {t[1] for t in copy.talkers} == speakers["train"] and copy.key()["talkers"]
    by_path = {path: speaker for path, speaker, _ in copy.talkers}
    name = sorted(by_path)[0]
    drawn = []
    real = augment._voice
    x = voice()
    try:
        augment._voice = lambda path, sr: drawn.append(path) or real(path, sr)
        voices = copy.training_voices(SR, name, np.random.default_rng(0))
        assert len(voices) == 8 and drawn and {by_path[p] for p in drawn}.isdisjoint({by_path[name]})
        assert {by_path[p] for p in drawn} <= speakers["train"] - {by_path[name]}
        drawn.clear()
        mixed = copy(x, SR, name)  # noise 1, babble only: its voices are loaded
        assert drawn and {by_path[p] for p in drawn}.isdisjoint({by_path[name]})
    finally:
        augment._voice = real
    np.testing.assert_array_equal(mixed, copy(x, SR, name))
    synthetic_copy = AugmentCopy({**copy.spec, "babble_from": "synthetic"}, 0, copy.seed)
    assert not np.allclose(mixed, synthetic_copy(x, SR, name))
    assert synthetic_copy.key() == synthetic.variant_caches["aug0"].augment.key()  # the key it had before the option
    other_fold = AugmentCopy(copy.spec, 0, copy.seed, copy.talkers[1:])
    assert other_fold.key()["talkers"] != copy.key()["talkers"]
    with pytest.raises(UsageError, match="needs the run's training recordings"):
        AugmentCopy(copy.spec, 0, copy.seed)
    with pytest.raises(UsageError, match="changes babble only, and noise kinds hold no babble"):
        load_config(None, ["training.augment.waveform.babble_from=training", "training.augment.waveform.noise_kinds=[pink]"])
    with pytest.raises(UsageError, match="other training speakers, and this run's 1 training speaker.s. leave 0"):
        prepare_data(load_config(None, [*sets, "data.split.val=1", "training.augment.waveform.babble_from=training"],
                                 data_root=str(synth_corpus)))
    no_copies = load_config(None, ["training.augment.waveform.babble_from=training"])  # a saved run's config loads
    with pytest.raises(UsageError, match="and copies is 0 .no copies, so it would change nothing.: set training"):
        check_training_start(no_copies)  # and no run starts with it (train and cv call this first)
    from conftest import REPO, cli

    for command in ("train", "cv"):
        refused = cli(command, "--config", REPO / "configs" / "fc_mfcc.yaml", "--run-name", "nb", "--data-root",
                      synth_corpus, "--runs-dir", tmp_path / "runs", "--set", "training.augment.waveform.babble_from=training",
                      *(["--folds", "loso"] if command == "cv" else []))
        assert refused.returncode == 2 and "copies is 0" in refused.stderr and not (tmp_path / "runs" / "nb").exists()
    with pytest.raises(UsageError, match="babble_from must be one of synthetic, training"):
        load_config(None, ["training.augment.waveform.babble_from=test"])
