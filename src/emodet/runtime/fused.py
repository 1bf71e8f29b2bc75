"""Late fusion of exported models: the weighted mean of their probabilities (torch-free)."""

from __future__ import annotations

import numpy as np

from ..core.errors import UsageError
from ..core.fusion import fuse_probabilities, normalized_weights
from .outputs import ProbabilityAPI, warn_if_few, window_dicts
from .predictor import EmotionPredictor, as_recordings


class FusedPredictor(ProbabilityAPI):
    """Late fusion of exported models: the weighted mean of their probabilities.

    Members may use different features (e.g. a log-mel CNN with its front end in the graph and
    a linear model over openSMILE functionals); each computes its own from the audio, at its
    own rate, with its own per-speaker statistics. They must share their labels.
    Same API as ``EmotionPredictor``.
    """

    def __init__(self, model_paths, weights: list[float] | None = None, threads: int = 1):
        self.members = [EmotionPredictor(p, threads) for p in model_paths]
        if not self.members:
            raise UsageError("a fused predictor needs at least one model")
        first = self.members[0]
        for m in self.members[1:]:
            if m.labels != first.labels:
                raise UsageError(f"models to fuse must share their labels: {first.path.name} has {first.labels}, "
                                 f"{m.path.name} has {m.labels}")
        self.weights = normalized_weights(weights, len(self.members), "fusion")
        self.labels = first.labels

    @property
    def needs_calibration(self) -> bool:
        return any(m.needs_calibration for m in self.members)

    @property
    def needs(self) -> str:
        return next((m.needs for m in self.members if m.needs != "nothing"), "nothing")

    def calibrate(self, recordings, sr: int | None = None, *, few_ok: bool = False) -> None:
        recordings = as_recordings(recordings, "calibrating")
        if not few_ok and self.needs != "nothing":
            warn_if_few(len(recordings), "calibrating the fusion", "of the speaker")  # once, not once a member
        for m in self._needing("calibrate"):
            m.calibrate(recordings, sr, few_ok=True)

    def adapt(self, recordings, sr: int | None = None, *, few_ok: bool = False) -> None:
        recordings = as_recordings(recordings, "adapting")
        if not few_ok and self.needs != "nothing":
            warn_if_few(len(recordings), "adapting the fusion", "of the domain")
        for m in self._needing("adapt"):
            m.adapt(recordings, sr, few_ok=True)

    def _needing(self, what: str) -> list[EmotionPredictor]:
        """The members that need ``what`` (a speaker's recordings go to per-speaker members, a domain's to
        per-corpus ones, so one never overwrites the other); all of them where none does (each says so)."""
        return [m for m in self.members if m.needs == what] or self.members

    def combine(self, member_probabilities: list[np.ndarray]) -> np.ndarray:
        """The weighted mean of the members' probabilities ``(B, C)``, in member order."""
        return fuse_probabilities(member_probabilities, self.weights)

    def probabilities(self, items, sr: int | None = None) -> np.ndarray:
        items = list(items)
        return self.combine([m.probabilities(items, sr) for m in self.members])

    def predict_windows(self, item, window_s: float, hop_s: float, sr: int | None = None) -> list[dict]:
        per_member = [m.window_probabilities(item, window_s, hop_s, sr) for m in self.members]
        n = min(len(w) for w in per_member)  # members at different rates may round the last window apart
        fused = [(start, end, self.combine([pm[i][2] for pm in per_member]))
                 for i, (start, end, _) in enumerate(per_member[0][:n])]
        return window_dicts(self.labels, fused)

    def describe(self) -> dict:
        return {"members": [m.describe() for m in self.members], "weights": self.weights.tolist(),
                "labels": self.labels, "needs": self.needs}
