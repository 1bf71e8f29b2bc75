"""Waveform augmentation: noise, reverberation, codecs and channels, gain and clipping (numpy, torch-free).

Each transform takes a mono float32 signal, its rate and a ``numpy.random.Generator`` and returns a
signal of the same length, so one seed gives one result (training copies are seeded by run seed,
copy number and file: reproducible, and a resumed run sees the same copies).

- ``add_noise``: white, pink or brown noise, babble (several voices mixed: by default emodet's synthetic
  voices; with ``babble_from: training`` recordings of the run's other training speakers, never the
  recording's own speaker and never a held-out one), or a recording from a noise folder (MUSAN's
  babble and the like), at an exact signal-to-noise ratio.
- ``reverberate``: a simulated room impulse response of a chosen RT60 (pyroomacoustics'
  image-source method in a random shoebox room whose walls give that RT60), or one from a folder.
- ``codec``: telephone band (8 kHz, 300-3400 Hz, mu-law), MP3 or Opus at a bit rate, GSM 06.10.
- ``gain``, ``clip``: level changes and hard clipping.

``Augmenter(spec)`` draws a chain of them for one copy from the config's ``training.augment.waveform``.
"""

from __future__ import annotations

import functools
import hashlib
import io
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

from ..core.audio import load_audio, resample
from ..core.errors import UsageError

NOISE_KINDS = ("white", "pink", "brown", "babble")
CODECS = ("telephone", "mp3", "opus", "gsm")


def _power(x: np.ndarray) -> float:
    return float(np.mean(np.asarray(x, np.float64) ** 2))


def coloured_noise(n: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-power noise with a 1/f^a spectrum: white (a = 0), pink (1), brown (2)."""
    exponent = {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind]
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0
    noise = np.fft.irfft(spectrum / f ** (exponent / 2), n)
    return (noise / np.sqrt(_power(noise) + 1e-20)).astype(np.float32)


def add_noise(wav: np.ndarray, sr: int, snr_db: float, rng: np.random.Generator, kind: str = "pink",
              noise: np.ndarray | None = None) -> np.ndarray:
    """``wav`` plus noise scaled to ``snr_db`` (signal power over noise power, whole recording). ``noise``
    (babble, a noise recording) is looped or cut to length at a random offset; else coloured noise."""
    n = len(wav)
    if noise is None:
        noise = coloured_noise(n, kind, rng)
    else:
        start = int(rng.integers(0, len(noise)))
        noise = np.resize(noise, n + len(noise))[start:start + n]
    scale = np.sqrt(_power(wav) / (_power(noise) * 10 ** (snr_db / 10) + 1e-20))
    return (wav + scale * noise).astype(np.float32)


def babble(pool: list[np.ndarray], n: int, rng: np.random.Generator, talkers: tuple[int, int] = (3, 6)) -> np.ndarray:
    """Several recordings of ``pool`` (other speakers) at random offsets, each at equal power, summed."""
    k = int(rng.integers(talkers[0], talkers[1] + 1))
    out = np.zeros(n, np.float64)
    for i in rng.choice(len(pool), size=min(k, len(pool)), replace=False):
        voice = np.resize(pool[i], n + len(pool[i]))
        start = int(rng.integers(0, len(pool[i])))
        piece = voice[start:start + n]
        out += piece / np.sqrt(_power(piece) + 1e-12)
    return out.astype(np.float32)


@functools.lru_cache(maxsize=64)
def room_impulse_response(sr: int, rt60: float, seed: int) -> np.ndarray:
    """An impulse response of a random shoebox room (3-10 m x 3-8 m x 2.5-4 m) whose walls give ``rt60``
    seconds (Sabine), source and microphone at random places at least 1 m apart; peak at index 0."""
    try:
        import pyroomacoustics as pra
    except ImportError:
        raise UsageError("room reverberation needs pyroomacoustics: pip install 'emodet[augment]' "
                         "(or give a folder of impulse responses: training.augment.waveform.rir_dir)") from None
    rng = np.random.default_rng(seed)
    dims = np.array([rng.uniform(3, 10), rng.uniform(3, 8), rng.uniform(2.5, 4)])
    absorption, max_order = pra.inverse_sabine(rt60, dims)
    room = pra.ShoeBox(dims, fs=sr, materials=pra.Material(absorption), max_order=min(max_order, 40),
                       use_rand_ism=False)
    while True:
        src, mic = rng.uniform(0.5, dims - 0.5), rng.uniform(0.5, dims - 0.5)
        if np.linalg.norm(src - mic) >= 1.0:
            break
    room.add_source(src)
    room.add_microphone(mic)
    room.compute_rir()
    rir = np.asarray(room.rir[0][0], np.float64)
    return (rir[int(np.argmax(np.abs(rir))):] / np.max(np.abs(rir))).astype(np.float32)


def reverberate(wav: np.ndarray, sr: int, rir: np.ndarray) -> np.ndarray:
    """``wav`` convolved with an impulse response (its direct path at 0), same length and power."""
    wet = signal.fftconvolve(wav, rir)[: len(wav)]
    return (wet * np.sqrt(_power(wav) / (_power(wet) + 1e-20))).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _compression_level(fmt: str, sr: int, kbps: float) -> float:
    """libsndfile's compression level that encodes ``fmt`` at about ``kbps`` (found once, by bisection)."""
    probe = coloured_noise(4 * sr, "pink", np.random.default_rng(0)) * 0.1
    lo, hi = 0.0, 0.99
    for _ in range(12):
        mid = (lo + hi) / 2
        got = len(_encode(probe, sr, fmt, mid)) * 8 / 4000
        lo, hi = (mid, hi) if got > kbps * 1.1 else (lo, mid)  # the highest rate not above kbps (+10%: headers)
    return hi


def _encode(wav: np.ndarray, sr: int, fmt: str, level: float) -> bytes:
    buffer = io.BytesIO()
    if fmt == "mp3":
        sf.write(buffer, wav, sr, format="MP3", compression_level=level, bitrate_mode="CONSTANT")
    else:
        sf.write(buffer, wav, sr, format="OGG", subtype="OPUS", compression_level=level)
    return buffer.getvalue()


def codec(wav: np.ndarray, sr: int, kind: str, kbps: float | None = None) -> np.ndarray:
    """The signal through a channel or codec and back to ``sr``: ``telephone`` (8 kHz, 300-3400 Hz band,
    8-bit mu-law), ``mp3`` / ``opus`` at ``kbps`` (default 32 / 16), ``gsm`` (GSM 06.10 at 8 kHz)."""
    n = len(wav)
    if kind == "telephone":
        narrow = resample(wav, sr, 8000)
        sos = signal.butter(4, [300, 3400], btype="bandpass", fs=8000, output="sos")
        narrow = np.clip(signal.sosfilt(sos, narrow), -1, 1)
        mu = 255.0
        companded = np.sign(narrow) * np.log1p(mu * np.abs(narrow)) / np.log1p(mu)
        quantised = np.round(companded * 127) / 127
        narrow = np.sign(quantised) * ((1 + mu) ** np.abs(quantised) - 1) / mu
        out = resample(narrow.astype(np.float32), 8000, sr)
    elif kind == "gsm":
        buffer = io.BytesIO()
        sf.write(buffer, np.clip(resample(wav, sr, 8000), -1, 1), 8000, format="WAV", subtype="GSM610")
        out = resample(sf.read(io.BytesIO(buffer.getvalue()), dtype="float32")[0], 8000, sr)
    elif kind in ("mp3", "opus"):
        rate = 16000 if kind == "mp3" else 48000 if sr > 16000 else 16000
        source = resample(wav, sr, rate)
        level = _compression_level(kind, rate, float(kbps or (32 if kind == "mp3" else 16)))
        decoded = sf.read(io.BytesIO(_encode(np.clip(source, -1, 1), rate, kind, level)), dtype="float32")[0]
        out = resample(decoded, rate, sr)
    else:
        raise UsageError(f"codec {kind!r}: valid codecs are {', '.join(CODECS)}")
    out = np.asarray(out, np.float32)
    return np.pad(out, (0, max(0, n - len(out))))[:n]


def gain(wav: np.ndarray, db: float) -> np.ndarray:
    return (wav * 10 ** (db / 20)).astype(np.float32)


def clip(wav: np.ndarray, fraction: float) -> np.ndarray:
    """Hard clipping at ``fraction`` of the recording's peak."""
    limit = fraction * float(np.max(np.abs(wav)) + 1e-12)
    return np.clip(wav, -limit, limit).astype(np.float32)


@dataclass(frozen=True)
class Augmenter:
    """One training copy's chain, drawn from a ``training.augment.waveform`` spec (a dict) with ``rng``.

    Each transform is applied with its probability, in the order noise, reverberation, codec, gain/clip;
    ``pool`` holds babble's voices (or is a callable returning them), ``noise_files`` / ``rir_files`` a
    user's folders.
    """

    spec: dict
    pool: tuple = ()
    noise_files: tuple = ()
    rir_files: tuple = ()

    def __call__(self, wav: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
        s = self.spec
        if rng.random() < s["reverb"]:
            if self.rir_files:
                rir = load_audio(self.rir_files[int(rng.integers(len(self.rir_files)))], sr)
                rir = rir[int(np.argmax(np.abs(rir))):]
            else:
                rir = room_impulse_response(sr, round(float(rng.uniform(*s["rt60"])), 1), int(rng.integers(16)))
            wav = reverberate(wav, sr, rir)
        if rng.random() < s["noise"]:
            snr = float(rng.uniform(*s["snr_db"]))
            kinds = list(s["noise_kinds"]) + (["folder"] if self.noise_files else [])
            kind = kinds[int(rng.integers(len(kinds)))]
            pool = (self.pool() if callable(self.pool) else self.pool) if kind == "babble" else ()  # loaded if needed
            if kind == "babble" and len(pool) >= 3:
                wav = add_noise(wav, sr, snr, rng, noise=babble(list(pool), len(wav), rng))
            elif kind == "folder":
                wav = add_noise(wav, sr, snr, rng, noise=load_audio(self.noise_files[int(rng.integers(len(self.noise_files)))], sr))
            else:
                wav = add_noise(wav, sr, snr, rng, kind="pink" if kind == "babble" else kind)
        if rng.random() < s["codec"]:
            wav = codec(wav, sr, CODECS[int(rng.integers(len(CODECS)))])
        if rng.random() < s["gain"]:
            wav = gain(wav, float(rng.uniform(-30, 6)))
            if rng.random() < 0.3:
                wav = clip(wav, float(rng.uniform(0.3, 0.9)))
        return wav


def audio_files_in(folder: str | None) -> tuple:
    if not folder:
        return ()
    from ..core.files import list_audio_files

    return tuple(str(Path(folder) / rel) for rel in list_audio_files(folder))


@dataclass(frozen=True)
class AugmentCopy:
    """Training copy number ``copy`` of every recording under ``spec``: what a feature cache of augmented
    features needs (its key, and the transform of each file, seeded by run seed, copy and file). The same
    copy of a file is the same in every fold of a cross-validation, so folds share the cache; with
    ``babble_from: training`` the babble comes from the fold's own training speakers (``talkers``), so each
    training set has copies of its own."""

    spec: dict
    copy: int
    seed: int
    talkers: tuple = ()  # ((absolute path, speaker, file signature), ...): babble's voices with babble_from training

    def __post_init__(self):
        if self.spec.get("babble_from") == "training" and not self.talkers:
            raise UsageError("training.augment.waveform.babble_from: training needs the run's training recordings "
                             "(AugmentCopy(..., talkers=...), as emodet.data.prepare gives them)")

    def key(self) -> dict:
        spec = {k: v for k, v in self.spec.items() if (k, v) != ("babble_from", "synthetic")}  # keys as before it
        key = {"spec": spec, "copy": self.copy, "seed": self.seed}
        if self.talkers:  # another training set (or a changed file), other babble: a cache entry of its own
            listed = "\n".join("\t".join(t) for t in sorted(self.talkers))
            key["talkers"] = hashlib.sha256(listed.encode("utf-8")).hexdigest()[:16]
        return key

    def __call__(self, wav: np.ndarray, sr: int, name: str) -> np.ndarray:
        seed = [self.seed, self.copy, zlib.crc32(name.encode("utf-8"))]
        voices = functools.partial(self.training_voices, sr, name, np.random.default_rng([*seed, 1])) \
            if self.spec.get("babble_from") == "training" else synthetic_voices(sr)
        augmenter = Augmenter(self.spec, voices, audio_files_in(self.spec.get("noise_dir")),
                              audio_files_in(self.spec.get("rir_dir")))
        return augmenter(wav, sr, np.random.default_rng(seed))

    def training_voices(self, sr: int, name: str, rng: np.random.Generator, n: int = 8) -> list[np.ndarray]:
        """``n`` recordings of training speakers other than the speaker of ``name``, drawn with ``rng``."""
        own = {speaker for path, speaker, _ in self.talkers if path == name}
        others = sorted(path for path, speaker, _ in self.talkers if speaker not in own)
        chosen = rng.choice(len(others), size=min(n, len(others)), replace=False) if others else []
        return [_voice(others[i], sr) for i in chosen]


@functools.lru_cache(maxsize=256)
def _voice(path: str, sr: int) -> np.ndarray:
    return load_audio(path, sr)


@functools.lru_cache(maxsize=2)
def synthetic_voices(sr: int, n: int = 24) -> tuple:
    """Babble's talkers: ``n`` utterances of emodet's synthetic speakers (men and women, every emotion)."""
    from .synth import SYNTH_LABELS, make_speakers, synthesize_utterance

    speakers = make_speakers(8, seed=12345)
    rng = np.random.default_rng(12345)
    return tuple(synthesize_utterance(speakers[i % 8], SYNTH_LABELS[i % len(SYNTH_LABELS)], rng, sr) for i in range(n))
