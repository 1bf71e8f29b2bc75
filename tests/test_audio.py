import numpy as np
import pytest
import soundfile as sf

from emodet.core.audio import AUDIO_EXTENSIONS, is_audio_file, load_audio, load_audio_with_rate, speed_perturb, trim_silence
from emodet.core.errors import AudioError

from conftest import sine

FORMATS = [
    ("u8.wav", "WAV", "PCM_U8", 1 / 64),
    ("s16.wav", "WAV", "PCM_16", 1e-3),
    ("s24.wav", "WAV", "PCM_24", 1e-5),
    ("s32.wav", "WAV", "PCM_32", 1e-6),
    ("f32.wav", "WAV", "FLOAT", 1e-7),
    ("f64.wav", "WAV", "DOUBLE", 1e-7),
    ("x.flac", "FLAC", "PCM_16", 1e-3),
    ("x.ogg", "OGG", "VORBIS", None),
    ("x.mp3", "MP3", "MPEG_LAYER_III", None),
]


@pytest.mark.parametrize("name,fmt,subtype,tol", FORMATS)
def test_every_format_loads_as_mono_float32(tmp_path, name, fmt, subtype, tol):
    x = sine(440, 16000, 1.0)
    path = tmp_path / name
    sf.write(path, x, 16000, format=fmt, subtype=subtype)
    y = load_audio(path, sr=16000)
    assert y.dtype == np.float32 and y.ndim == 1
    if tol is not None:  # lossless: sample for sample
        assert len(y) == len(x)
        assert np.abs(y - x).max() <= tol
    else:  # lossy codecs: length within a frame of padding, the tone's frequency kept
        assert abs(len(y) - len(x)) < 3000
        spectrum = np.abs(np.fft.rfft(y[2000:14000]))
        assert abs(np.argmax(spectrum) * 16000 / 12000 - 440) < 5


def test_stereo_is_averaged(tmp_path):
    left, right = sine(300), sine(500, amp=0.25)
    sf.write(tmp_path / "st.wav", np.stack([left, right], 1), 16000, subtype="FLOAT")
    y = load_audio(tmp_path / "st.wav")
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-7)


@pytest.mark.parametrize("file_sr", [8000, 22050, 44100, 48000])
def test_resampling_keeps_frequency_and_duration(tmp_path, file_sr):
    sf.write(tmp_path / "r.wav", sine(1000, file_sr, 2.0), file_sr, subtype="FLOAT")
    y = load_audio(tmp_path / "r.wav", sr=16000)
    assert len(y) == 32000
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spectrum) * 16000 / len(y) - 1000) <= 1
    wav, sr = load_audio_with_rate(tmp_path / "r.wav", sr=None)
    assert sr == file_sr and len(wav) == 2 * file_sr


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturbation_scales_duration_and_pitch(factor):
    y = speed_perturb(sine(1000, 16000, 2.0), 16000, factor)
    assert abs(len(y) - 32000 / factor) <= 1
    peak = np.argmax(np.abs(np.fft.rfft(y))) * 16000 / len(y)
    assert abs(peak - 1000 * factor) <= 1
    x = sine(300)
    assert speed_perturb(x, 16000, 1) is x
    for bad in (0, 3, "1.1", True):
        with pytest.raises(ValueError, match="speed factor must be a number in"):
            speed_perturb(x, 16000, bad)


def test_resampling_equals_librosa(tmp_path):
    librosa = pytest.importorskip("librosa")
    sf.write(tmp_path / "r.wav", sine(700, 22050, 1.0), 22050, subtype="FLOAT")
    ours = load_audio(tmp_path / "r.wav", sr=16000)
    ref, _ = librosa.load(tmp_path / "r.wav", sr=16000)
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match=r"nope\.wav: file not found"):
        load_audio(tmp_path / "nope.wav")


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty\.wav: zero-byte file"):
        load_audio(tmp_path / "empty.wav")


def test_random_bytes(tmp_path):
    (tmp_path / "junk.wav").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(AudioError, match=r"junk\.wav: cannot decode audio"):
        load_audio(tmp_path / "junk.wav")


def test_truncated_wav_header(tmp_path):
    sf.write(tmp_path / "ok.wav", sine(), 16000)
    (tmp_path / "cut.wav").write_bytes((tmp_path / "ok.wav").read_bytes()[:30])
    with pytest.raises(AudioError, match=r"cut\.wav"):
        load_audio(tmp_path / "cut.wav")


def test_no_samples(tmp_path):
    sf.write(tmp_path / "none.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match=r"none\.wav: audio holds no samples"):
        load_audio(tmp_path / "none.wav")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_samples(tmp_path, bad):
    x = sine()
    x[100:103] = bad
    sf.write(tmp_path / "nan.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav: audio holds 3 NaN or infinite samples"):
        load_audio(tmp_path / "nan.wav")


def test_bad_sample_rate(tmp_path):
    sf.write(tmp_path / "a.wav", sine(), 16000)
    with pytest.raises(AudioError, match="sample rate must be a positive integer"):
        load_audio(tmp_path / "a.wav", sr=0)


def test_audio_extensions():
    assert is_audio_file("a/B.WAV") and is_audio_file("x.flac") and is_audio_file("y.mp3")
    assert not is_audio_file("notes.txt") and ".ogg" in AUDIO_EXTENSIONS


@pytest.mark.parametrize("sr", [8000, 16000, 22050, 48000])
@pytest.mark.parametrize("top_db", [20, 30, 60])
def test_trim_silence_equals_librosa(sr, top_db):
    librosa = pytest.importorskip("librosa")
    rng = np.random.default_rng(sr + top_db)
    t = np.arange(int(2.0 * sr)) / sr
    wav = (1e-4 * rng.standard_normal(t.size)).astype(np.float32)  # room noise, about -70 dB
    burst = (t > 0.6) & (t < 1.45)
    wav[burst] += (0.5 * np.sin(2 * np.pi * 220 * t[burst]) * np.hanning(burst.sum())).astype(np.float32)
    got, (start, end) = trim_silence(wav, sr, top_db)
    fr, hop = int(round(0.064 * sr)), int(round(0.016 * sr))
    want, idx = librosa.effects.trim(wav, top_db=top_db, frame_length=fr, hop_length=hop)
    assert (start, end) == tuple(idx) and np.array_equal(got, want)
    if top_db <= 30:  # the noise is trimmed away, the tone is kept
        assert 0.5 < start / sr < 0.8 and 1.3 < end / sr < 1.6


def test_trim_silence_edge_cases():
    assert trim_silence(np.zeros(16000, np.float32), 16000, 30)[1] == (0, 16000)  # all silence: kept whole
    short = np.ones(10, np.float32)
    assert trim_silence(short, 16000, 30)[1] == (0, 10)  # shorter than a frame
    loud = sine(440, 16000, 1.0)
    assert trim_silence(loud, 16000, 30)[1] == (0, 16000)  # nothing to trim
