"""Live audio: sliding windows over a signal that arrives in chunks, in bounded memory (torch-free).

``LiveWindows(predictor, window_s=2, hop_s=0.5)``: ``push(samples)`` appends chunks of a mono
signal at ``sr``; ``due()`` gives the windows whose audio has arrived, one every ``hop_s``, each
``window_s`` long and at the times ``predict_windows`` gives the same signal read as a file;
``predict(window)`` their probabilities, with a current label smoothed over the last few windows,
and ``summary()`` the time spent in each label. The audio lives in a ring buffer of
``window_s + max_lag_s`` seconds: a consumer that falls further behind (a slow client, an
overloaded machine, a burst of audio) loses the oldest windows, counted in ``dropped_windows``,
rather than the buffer growing.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from ..core.errors import UsageError
from .outputs import top_label

MAX_LAG_SECONDS = 4.0  # audio kept beyond one window: how far the predictions may fall behind before windows drop


class RingBuffer:
    """The last ``capacity`` samples of a stream: ``write(x)`` appends (overwriting the oldest) and
    ``read(start, end)`` returns samples by their absolute position in the stream."""

    def __init__(self, capacity: int):
        self.data = np.zeros(int(capacity), dtype=np.float32)
        self.capacity = int(capacity)
        self.total = 0  # samples written since the start

    @property
    def oldest(self) -> int:
        """Absolute position of the oldest sample still held."""
        return max(0, self.total - self.capacity)

    def write(self, samples: np.ndarray) -> None:
        x = np.asarray(samples, dtype=np.float32).ravel()
        n = len(x)
        if n > self.capacity:
            x = x[-self.capacity:]
        pos = (self.total + n - len(x)) % self.capacity
        first = min(len(x), self.capacity - pos)
        self.data[pos:pos + first] = x[:first]
        self.data[: len(x) - first] = x[first:]
        self.total += n

    def read(self, start: int, end: int) -> np.ndarray:
        """A copy of samples ``[start, end)`` ``(end - start,)``; they must still be held."""
        if not self.oldest <= start <= end <= self.total:
            raise IndexError(f"samples {start}-{end} not held (held: {self.oldest}-{self.total})")
        idx = np.arange(start, end) % self.capacity
        return self.data[idx]


@dataclass
class Window:
    """A window due for prediction: times in seconds from the start of the stream and its samples."""

    start: float
    end: float
    samples: np.ndarray


class LiveWindows:
    """Sliding windows over live audio, their predictions and a smoothed current label.

    ``push(samples)`` mono float32 chunks at ``sr``; ``due()`` the windows ready; ``predict(window)``
    (or ``record(window, probabilities)`` where the model runs elsewhere, e.g. on a worker thread) the
    prediction ``{start, end, label, probabilities, current: {label, confidence}}``: ``label`` is the
    window's own top label and ``current`` the top label of the mean of the last ``smooth`` windows
    (``"uncertain"`` below ``min_confidence``); ``finish()`` the trailing short windows of a stream
    that ended; ``summary()`` the seconds each current label held.
    """

    def __init__(self, predictor, window_s: float = 2.0, hop_s: float = 0.5, sr: int = 16000,
                 min_confidence: float = 0.0, smooth: int = 3, max_lag_s: float = MAX_LAG_SECONDS):
        check_live_options(window_s, hop_s, min_confidence)
        self.predictor, self.sr, self.min_confidence = predictor, int(sr), float(min_confidence)
        self.window_s, self.hop_s = float(window_s), float(hop_s)
        self.win, self.hop = max(1, round(window_s * sr)), max(1, round(hop_s * sr))
        self.ring = RingBuffer(self.win + max(self.hop, round(max_lag_s * sr)))
        self.next_end = self.win  # end of the next window, in samples
        self.recent: deque = deque(maxlen=max(1, int(smooth)))
        self.label_seconds = {lab: 0.0 for lab in [*predictor.labels, "uncertain"]}
        self.last_end = 0.0
        self.dropped_windows = 0
        self.windows = 0

    @property
    def seconds(self) -> float:
        """Seconds of audio pushed so far."""
        return self.ring.total / self.sr

    @property
    def dropped_s(self) -> float:
        """Seconds of windows lost because the predictions fell behind (each lost window counts a hop)."""
        return round(self.dropped_windows * self.hop_s, 3)

    def push(self, samples: np.ndarray) -> None:
        self.ring.write(samples)

    def due(self) -> list[Window]:
        """The windows whose audio has all arrived and is still held (older ones count as dropped)."""
        out = []
        while self.next_end <= self.ring.total:
            start = self.next_end - self.win
            if start < self.ring.oldest:  # overwritten before it was read: skip every such window at once
                lost = math.ceil((self.ring.oldest - start) / self.hop)
                self.dropped_windows += lost
                self.next_end += lost * self.hop
                continue
            out.append(self._window(start, self.next_end))
            self.next_end += self.hop
        return out

    def finish(self) -> list[Window]:
        """After the last push: the windows still due and the trailing short ones, as ``predict_windows`` cuts
        a file (a stream shorter than a window gives one window of all of it)."""
        out = self.due()
        total = self.ring.total
        if not out and self.windows == 0 and self.dropped_windows == 0 and 0 < total < self.win:
            return [self._window(0, total)]
        while self.next_end - self.hop < total:  # hop <= window: the start is before the end, and still held
            out.append(self._window(self.next_end - self.win, min(self.next_end, total)))
            self.next_end += self.hop
        return out

    def _window(self, start: int, end: int) -> Window:
        return Window(round(start / self.sr, 3), round(end / self.sr, 3), self.ring.read(start, end))

    def predict(self, window: Window) -> dict:
        """Run the model on a window and ``record`` it."""
        return self.record(window, self.predictor.predict(window.samples, sr=self.sr))

    def record(self, window: Window, probabilities: dict) -> dict:
        """The prediction of a window given its probabilities; windows must be recorded in order."""
        self.recent.append(np.array([probabilities[lab] for lab in self.predictor.labels]))
        smoothed = dict(zip(self.predictor.labels, np.mean(self.recent, axis=0).tolist()))
        current = top_label(smoothed, self.min_confidence)
        self.label_seconds[current] += max(0.0, window.end - max(self.last_end, window.start))
        self.last_end = window.end
        self.windows += 1
        return {"start": window.start, "end": window.end, "label": top_label(probabilities, self.min_confidence),
                "probabilities": probabilities,
                "current": {"label": current, "confidence": round(max(smoothed.values()), 4)},
                "dropped_s": self.dropped_s}

    def summary(self) -> dict:
        """``{seconds, labels: {label: seconds}, windows, dropped_s}``: labels by the time they held, most first."""
        held = sorted(((lab, round(s, 3)) for lab, s in self.label_seconds.items() if s > 0), key=lambda kv: -kv[1])
        return {"seconds": round(self.seconds, 3), "labels": dict(held), "windows": self.windows,
                "dropped_s": self.dropped_s}


def check_live_options(window_s: float, hop_s: float, min_confidence: float = 0.0, max_window_s: float = 30.0) -> None:
    """A ``UsageError`` naming the value when the window, hop or confidence threshold is out of range."""
    if not (isinstance(window_s, (int, float)) and 0 < window_s <= max_window_s):
        raise UsageError(f"window must be seconds in (0, {max_window_s:g}], got {window_s!r}")
    if not (isinstance(hop_s, (int, float)) and 0.05 <= hop_s <= window_s):
        raise UsageError(f"hop must be seconds from 0.05 to the window ({window_s:g}), got {hop_s!r}")
    if not (isinstance(min_confidence, (int, float)) and 0 <= min_confidence < 1):
        raise UsageError(f"min_confidence is a probability in [0, 1), got {min_confidence!r}")


def private_copy(predictor):
    """A predictor sharing the loaded ONNX sessions of ``predictor`` but with calibration statistics of its own
    (a stream's speaker, a request's self-calibration) that never reach the original."""
    twin = copy.copy(predictor)
    if hasattr(twin, "members"):
        twin.members = [copy.copy(m) for m in twin.members]
    return twin
