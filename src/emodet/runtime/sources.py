"""Where live audio comes from: a microphone, or a file played in real time or as fast as it decodes.

An ``AudioSource`` is a context manager whose ``chunks()`` yields mono float32 arrays ``(samples,)``
at ``sr`` until the source ends (a file) or the caller stops (Ctrl-C at a microphone). Tests and
demos feed ``LiveWindows`` from a ``FileSource`` exactly as the command line feeds it from a
``MicrophoneSource``.
"""

from __future__ import annotations

import logging
import queue
import time
from typing import Iterator

import numpy as np

from ..core.audio import load_audio
from ..core.errors import UsageError

log = logging.getLogger(__name__)
MIC_INSTALL_HINT = "pip install 'emodet[mic]'"


class AudioSource:
    """Mono float32 chunks at ``sr``; ``dropped_s`` counts audio lost because the reader fell behind."""

    sr: int = 16000
    dropped_s: float = 0.0

    def chunks(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the device (nothing for a file)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FileSource(AudioSource):
    """A recording played as a live stream: chunks of ``chunk_s`` seconds, paced to real time with
    ``realtime=True`` (as a microphone would deliver them) or as fast as the reader takes them."""

    def __init__(self, path, sr: int = 16000, chunk_s: float = 0.1, realtime: bool = True):
        self.path, self.sr, self.realtime = path, int(sr), realtime
        self.chunk = max(1, round(chunk_s * sr))
        self.wav = load_audio(path, self.sr)

    def chunks(self) -> Iterator[np.ndarray]:
        began = time.monotonic()
        for i, start in enumerate(range(0, len(self.wav), self.chunk)):
            piece = self.wav[start:start + self.chunk]
            if self.realtime:  # a chunk is ready once its last sample has "happened"
                time.sleep(max(0.0, began + (start + len(piece)) / self.sr - time.monotonic()))
            yield piece


class MicrophoneSource(AudioSource):
    """The default (or ``device``) input through PortAudio (``sounddevice``), resampled to ``sr`` where the
    device does not record at that rate. Chunks wait in a queue of at most ``max_queue_s`` seconds: a
    reader that falls further behind loses the oldest audio (counted in ``dropped_s``), never memory."""

    def __init__(self, device=None, sr: int = 16000, chunk_s: float = 0.1, max_queue_s: float = 5.0):
        self.sd = import_sounddevice()
        self.sr, self.device = int(sr), parse_device(device)
        self.queue: queue.Queue = queue.Queue(maxsize=max(2, int(max_queue_s / chunk_s)))
        rate = self.rate = self._device_rate()
        self.resampler = None
        if rate != self.sr:
            import soxr

            self.resampler = soxr.ResampleStream(rate, self.sr, 1, dtype="float32")
            log.info("microphone records at %d Hz: resampling to %d Hz", rate, self.sr)
        try:
            self.stream = self.sd.InputStream(samplerate=rate, channels=1, dtype="float32", device=self.device,
                                              blocksize=max(1, round(chunk_s * rate)), callback=self._callback)
            self.stream.start()
        except self.sd.PortAudioError as exc:
            raise UsageError(f"cannot open the microphone{self._named()}: {exc}") from None

    def _device_rate(self) -> int:
        """``sr`` when the device records at it, else the device's own default rate."""
        try:
            info = self.sd.query_devices(self.device, "input")
        except (ValueError, self.sd.PortAudioError) as exc:
            raise UsageError(f"no usable microphone{self._named()} ({exc}); input devices: "
                             f"{input_devices(self.sd)}") from None
        try:
            self.sd.check_input_settings(device=self.device, channels=1, dtype="float32", samplerate=self.sr)
            return self.sr
        except (ValueError, self.sd.PortAudioError):
            return int(info["default_samplerate"])

    def _named(self) -> str:
        return f" (--device {self.device})" if self.device is not None else ""

    def _callback(self, indata, frames, when, status) -> None:  # PortAudio's thread: never block here
        try:
            self.queue.put_nowait(indata[:, 0].copy())
        except queue.Full:
            self.dropped_s += frames / self.rate

    def chunks(self) -> Iterator[np.ndarray]:
        while True:
            try:
                piece = self.queue.get(timeout=0.5)  # a timeout keeps Ctrl-C prompt everywhere
            except queue.Empty:
                continue
            if self.resampler is not None:
                piece = self.resampler.resample_chunk(piece)
            if len(piece):
                yield piece

    def close(self) -> None:
        stream = getattr(self, "stream", None)
        if stream is not None:
            stream.stop()
            stream.close()


def import_sounddevice():
    """The ``sounddevice`` module, or a ``UsageError`` saying what to install."""
    try:
        import sounddevice
    except ImportError:
        raise UsageError(f"--mic needs the sounddevice package: {MIC_INSTALL_HINT}") from None
    except OSError as exc:  # the package is there, the PortAudio library is not
        raise UsageError(f"--mic needs the PortAudio library ({exc}): apt-get install libportaudio2 "
                         "(Debian/Ubuntu), brew install portaudio (macOS)") from None
    return sounddevice


def parse_device(device):
    """``--device``: a device number, a part of a device's name, or ``None`` for the default input."""
    if device is None or isinstance(device, int):
        return device
    text = str(device).strip()
    return int(text) if text.isdigit() else text


def input_devices(sd) -> str:
    """``0 'Built-in Microphone', 3 'USB Audio'``: the devices with inputs, for error messages."""
    found = [f"{i} {d['name']!r}" for i, d in enumerate(sd.query_devices()) if d.get("max_input_channels", 0) > 0]
    return ", ".join(found) or "none found"
