"""A synthetic, speech-like emotion corpus: no download, made in seconds, deterministic for a seed.

Each utterance is a chain of syllables: a voiced harmonic source (pitch contour with
jitter and shimmer, spectral tilt) through vowel formant resonators, consonant noise bursts,
aspiration noise and background noise. Emotion classes move the parameters the way acted
emotions do (pitch level and range, tempo, loudness, spectral tilt, jitter, breathiness);
speakers differ in base pitch, vocal-tract length, voice quality, loudness and channel. Each
utterance also draws its own variation around its class, so classes overlap: a simple
classifier separates them clearly, not perfectly, across held-out speakers.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter

from ..core.errors import UsageError
from ..core.io import atomic_open, atomic_write_csv

SYNTH_LABELS = ("neutral", "happy", "sad", "angry", "fearful")

# Per class: pitch factor, pitch range (octaves), tempo factor, level (dB), tilt change
# (dB/octave, positive = brighter), jitter (relative), shimmer (relative), breathiness.
_EMOTIONS = {
    "neutral": dict(pitch=1.00, range=0.22, tempo=1.00, level=0.0, tilt=0.0, jitter=0.005, shimmer=0.04, breath=0.03),
    "happy": dict(pitch=1.25, range=0.60, tempo=1.12, level=3.0, tilt=2.0, jitter=0.008, shimmer=0.06, breath=0.03),
    "sad": dict(pitch=0.90, range=0.10, tempo=0.75, level=-6.0, tilt=-5.0, jitter=0.010, shimmer=0.05, breath=0.08),
    "angry": dict(pitch=1.22, range=0.40, tempo=1.18, level=7.0, tilt=5.0, jitter=0.012, shimmer=0.10, breath=0.02),
    "fearful": dict(pitch=1.45, range=0.30, tempo=1.30, level=-2.0, tilt=-1.0, jitter=0.035, shimmer=0.14, breath=0.16),
}

# Formants (F1, F2, F3 in Hz) of a few vowels for an average adult vocal tract.
_VOWELS = np.array([[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [570, 840, 2410],
                    [660, 1720, 2410], [490, 1350, 1690]], dtype=np.float64)


@dataclass(frozen=True)
class Speaker:
    """Voice of one synthetic speaker."""

    name: str
    f0: float  # base pitch, Hz
    tract: float  # formant scaling (shorter tract = higher formants)
    tilt: float  # source roll-off, dB/octave
    tempo: float
    level: float  # dB
    breath: float
    noise_db: float  # background noise level, dB below the speech


def make_speakers(n: int, seed: int) -> list[Speaker]:
    """``n`` speakers, alternating male and female voices, drawn from ``seed``."""
    rng = np.random.default_rng([seed, 7919])
    speakers = []
    for i in range(n):
        female = i % 2 == 1
        speakers.append(Speaker(
            name=f"spk{i + 1:02d}",
            f0=float(rng.uniform(185, 240) if female else rng.uniform(95, 135)),
            tract=float(rng.uniform(1.08, 1.2) if female else rng.uniform(0.9, 1.02)),
            tilt=float(rng.uniform(-13.5, -11.5)),
            tempo=float(rng.uniform(0.85, 1.15)),
            level=float(rng.uniform(-3, 3)),
            breath=float(rng.uniform(0.0, 0.06)),
            noise_db=float(rng.uniform(42, 55)),
        ))
    return speakers


def synthesize_utterance(speaker: Speaker, label: str, rng: np.random.Generator, sr: int = 16000) -> np.ndarray:
    """One utterance ``(samples,)`` float32 in [-1, 1] of ``speaker`` showing ``label``."""
    emo = _EMOTIONS[label]

    def vary(value: float, spread: float) -> float:
        return float(value * np.exp(rng.normal(0.0, spread)))

    tempo = vary(emo["tempo"] * speaker.tempo, 0.08)
    pitch = vary(speaker.f0 * emo["pitch"], 0.10)
    pitch_range = max(0.02, vary(emo["range"], 0.35))
    tilt = speaker.tilt + emo["tilt"] + rng.normal(0.0, 0.8)
    jitter = vary(emo["jitter"], 0.3)
    shimmer = vary(emo["shimmer"], 0.3)
    breath = emo["breath"] + speaker.breath + abs(rng.normal(0.0, 0.02))
    level_db = speaker.level + emo["level"] + rng.normal(0.0, 1.5)

    n_syll = int(rng.integers(5, 11))
    pieces = [np.zeros(int(sr * rng.uniform(0.05, 0.15)), dtype=np.float64)]
    phrase_pos = np.linspace(0.0, 1.0, n_syll)
    for k in range(n_syll):
        dur = rng.uniform(0.12, 0.26) / tempo
        n = int(dur * sr)
        # Intonation: declination over the phrase, an accent on some syllables, a rise or fall within.
        accent = rng.choice([0.0, 1.0], p=[0.6, 0.4]) * rng.uniform(0.3, 1.0)
        start_oct = pitch_range * (0.5 - phrase_pos[k] * 0.6 + accent * 0.5)
        end_oct = start_oct + pitch_range * rng.normal(0.0, 0.4)
        contour = np.linspace(start_oct, end_oct, n)
        slow = _lowpass_noise(rng, n, sr, 6.0)
        f0 = pitch * 2.0 ** (contour + jitter * 3.0 * slow) * (1.0 + jitter * rng.standard_normal(n) * 0.5)
        vowel = _VOWELS[rng.integers(len(_VOWELS))] * speaker.tract * np.exp(rng.normal(0.0, 0.04, 3))
        voiced = _voiced(f0, tilt, shimmer, rng, sr)
        voiced = _formants(voiced, vowel, sr)
        voiced /= np.sqrt(np.mean(voiced**2)) + 1e-12
        voiced += breath * 0.1 * _formants(rng.standard_normal(n), vowel, sr)
        voiced = lfilter([1.0, -0.97], [1.0], voiced)  # radiation at the lips: +6 dB/octave
        voiced /= np.sqrt(np.mean(voiced**2)) + 1e-12  # loudness is set once, for the utterance
        env = _syllable_envelope(n, rng)
        pieces.append(_consonant(rng, sr, tempo) * 10.0 ** (emo["tilt"] / 20.0))  # effort sharpens consonants
        pieces.append(voiced * env)
        if rng.random() < 0.3:  # a pause between words
            pieces.append(np.zeros(int(sr * rng.uniform(0.04, 0.2) / tempo)))
    pieces.append(np.zeros(int(sr * rng.uniform(0.05, 0.15))))
    speech = np.concatenate(pieces)
    speech /= np.sqrt(np.mean(speech**2)) + 1e-12
    speech *= 0.08 * 10.0 ** (level_db / 20.0)
    noise = rng.standard_normal(len(speech)) * 0.08 * 10.0 ** (-speaker.noise_db / 20.0)
    out = speech + noise
    peak = np.max(np.abs(out))
    if peak > 0.99:
        out *= 0.99 / peak
    return out.astype(np.float32)


def _lowpass_noise(rng: np.random.Generator, n: int, sr: int, cutoff_hz: float) -> np.ndarray:
    a = np.exp(-2 * np.pi * cutoff_hz / sr)
    x = lfilter([1 - a], [1, -a], rng.standard_normal(n))
    return x / (np.std(x) + 1e-12)


def _voiced(f0: np.ndarray, tilt_db_oct: float, shimmer: float, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Harmonic source with a roll-off of ``tilt_db_oct`` dB per octave and amplitude shimmer."""
    phase = 2 * np.pi * np.cumsum(f0) / sr
    n_harm = int(min(60, (0.45 * sr) // max(np.min(f0), 50.0)))
    k = np.arange(1, n_harm + 1)[:, None]
    amps = 10.0 ** (tilt_db_oct * np.log2(k) / 20.0)
    audible = (k * f0[None, :]) < 0.45 * sr
    source = np.sum(amps * audible * np.sin(k * phase[None, :]), axis=0)
    source /= np.sqrt(np.mean(source**2)) + 1e-12  # tilt changes the colour, not the loudness
    amp_mod = 1.0 + shimmer * _lowpass_noise(rng, len(f0), sr, 40.0)
    return source * np.clip(amp_mod, 0.2, None)


def _formants(x: np.ndarray, formants: np.ndarray, sr: int) -> np.ndarray:
    y = x
    for freq, bw in zip(formants, (80.0, 110.0, 160.0)):
        freq = min(freq, 0.45 * sr)
        r = np.exp(-np.pi * bw / sr)
        theta = 2 * np.pi * freq / sr
        a = [1.0, -2 * r * np.cos(theta), r * r]
        y = lfilter([sum(a)], a, y)  # Klatt resonator: unit gain at 0 Hz
    return y


def _syllable_envelope(n: int, rng: np.random.Generator) -> np.ndarray:
    attack = max(1, int(n * rng.uniform(0.1, 0.3)))
    release = max(1, int(n * rng.uniform(0.2, 0.4)))
    env = np.ones(n)
    env[:attack] = np.sin(np.linspace(0, np.pi / 2, attack)) ** 2
    env[n - release:] = np.cos(np.linspace(0, np.pi / 2, release)) ** 2
    return env


def _consonant(rng: np.random.Generator, sr: int, tempo: float) -> np.ndarray:
    n = int(sr * rng.uniform(0.02, 0.07) / tempo)
    burst = rng.standard_normal(n)
    burst = lfilter([1.0, -0.95], [1.0], burst)  # fricative-like, high-frequency emphasis
    return burst * np.hanning(n) * rng.uniform(0.02, 0.08)


def generate_corpus(out: str | os.PathLike, per_class: int = 12, speakers: int = 8, seed: int = 0,
                    sr: int = 16000, labels=SYNTH_LABELS) -> list[dict]:
    """Write ``speakers x len(labels) x per_class`` WAV files to ``out/<label>/<speaker>_<label>_<nnn>.wav``.

    Returns one dict a file (``path`` relative to ``out``, ``label``, ``speaker``) and writes
    the same as ``out/metadata.csv``. Each file depends only on ``seed``, its speaker, its
    label and its index, so a larger corpus extends a smaller one with the same seed.
    """
    if per_class < 1 or speakers < 1:
        raise UsageError(f"--per-class and --speakers must be at least 1, got {per_class} and {speakers}")
    unknown = [lab for lab in labels if lab not in _EMOTIONS]
    if unknown:
        raise UsageError(f"synthetic corpus has no label {unknown[0]!r}; valid labels: {', '.join(SYNTH_LABELS)}")
    out = Path(out)
    rows = []
    for spk in make_speakers(speakers, seed):
        for label in labels:
            (out / label).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                key = zlib.crc32(f"{spk.name}/{label}/{i}".encode())
                rng = np.random.default_rng([seed, key])
                wav = synthesize_utterance(spk, label, rng, sr)
                rel = f"{label}/{spk.name}_{label}_{i:03d}.wav"
                _write_wav_atomic(out / rel, wav, sr)
                rows.append({"path": rel, "label": label, "speaker": spk.name, "duration_s": round(len(wav) / sr, 4)})
    atomic_write_csv(out / "metadata.csv", rows, ["path", "label", "speaker", "duration_s"])
    return rows


def _write_wav_atomic(path: Path, wav: np.ndarray, sr: int) -> None:
    with atomic_open(path, "wb") as fh:
        sf.write(fh, wav, sr, subtype="PCM_16", format="WAV")
