"""Calibrated confidence (emodet.evaluation.calibration): numbers against hand-worked cases."""

import numpy as np
import pytest

from emodet.core.fusion import softmax
from emodet.evaluation.calibration import brier, calibration_report, coverage_curve, ece, fit_temperature, reliability


def test_temperature_recovers_a_known_over_confidence():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, 5)) * 1.5
    targets = np.array([rng.choice(5, p=p) for p in softmax(true_logits)])  # labels drawn from calibrated probs
    assert fit_temperature(true_logits, targets) == pytest.approx(1.0, abs=0.08)
    assert fit_temperature(true_logits * 3.0, targets) == pytest.approx(3.0, rel=0.08)  # over-confident by 3
    assert fit_temperature(true_logits * 0.5, targets) == pytest.approx(0.5, rel=0.08)


def test_ece_of_a_hand_worked_case():
    # 4 recordings: confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.6 (right); 15 bins
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    targets = np.array([0, 1, 0, 0])
    # bin of 0.9: accuracy 0.5, confidence 0.9 -> gap 0.4 (2 items); bin of 0.6: accuracy 1, confidence 0.6 -> 0.4
    assert ece(probs, targets) == pytest.approx((2 * 0.4 + 2 * 0.4) / 4)
    r = reliability(probs, targets)
    assert sum(r["count"]) == 4 and len(r["count"]) == 15
    assert brier(probs, targets) == pytest.approx((0.02 + 1.62 + 0.32 + 0.32) / 4)


def test_scaling_lowers_ece_and_keeps_the_answers():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2000, 4)) * 1.2
    targets = np.array([rng.choice(4, p=p) for p in softmax(logits)])
    report = calibration_report(logits * 4, targets)
    assert report["temperature"] > 3 and report["ece_after"] < report["ece_before"] / 3
    assert report["brier_after"] < report["brier_before"]
    assert (softmax(logits * 4 / report["temperature"]).argmax(1) == logits.argmax(1)).all()


def test_abstaining_trades_coverage_for_accuracy():
    probs = np.array([[0.95, 0.05], [0.8, 0.2], [0.55, 0.45], [0.52, 0.48]])
    targets = np.array([0, 0, 1, 1])
    curve = {c["threshold"]: c for c in coverage_curve(probs, targets, [0.0, 0.6, 0.9])}
    assert curve[0.0] == {"threshold": 0.0, "coverage": 1.0, "accuracy": 0.5}
    assert curve[0.6]["coverage"] == 0.5 and curve[0.6]["accuracy"] == 1.0
    assert curve[0.9]["coverage"] == 0.25
