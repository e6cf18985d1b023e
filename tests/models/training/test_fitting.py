"""Temperature scaling, keep thresholds and ECE on synthetic scores with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from models.calibration import Calibration, HeadCalibration
from models.training.fitting import calibrate_head, expected_calibration_error, fit_temperature, fit_threshold


def test_threshold_keeps_the_largest_top_that_reaches_the_target():
    confidence = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6])
    correct = np.array([True, True, True, True, False, False])
    assert fit_threshold(confidence, correct, target=0.97, min_kept=1) == pytest.approx(0.8)
    assert fit_threshold(confidence, correct, target=0.8, min_kept=1) == pytest.approx(0.7)


def test_threshold_above_one_when_the_target_is_never_met():
    confidence = np.linspace(0.5, 1.0, 50)
    correct = np.zeros(50, dtype=bool)
    assert fit_threshold(confidence, correct) > 1.0


def test_ties_are_kept_or_dropped_together():
    confidence = np.array([0.9, 0.9, 0.9, 0.5])
    correct = np.array([True, True, False, True])
    # Keeping 0.9 keeps all three tied rows (2/3 right), so the target of 0.9 is never met above 0.5.
    assert fit_threshold(confidence, correct, target=0.9, min_kept=1) > 1.0


def test_temperature_recovers_the_scale_of_overconfident_logits():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, 3)) * 2
    p = np.exp(true_logits) / np.exp(true_logits).sum(1, keepdims=True)
    gold = np.array([rng.choice(3, p=row) for row in p])
    assert fit_temperature(true_logits * 3, gold) == pytest.approx(3.0, rel=0.15)


def test_ece_is_zero_when_confidence_equals_accuracy():
    confidence = np.full(1000, 0.8)
    correct = np.arange(1000) % 5 != 0
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.0, abs=1e-9)
    assert expected_calibration_error(np.full(1000, 0.99), correct) == pytest.approx(0.19, abs=1e-6)


def test_calibrated_head_keeps_answers_at_the_target(tmp_path):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3000, 4)) * 3
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    gold = np.array([rng.choice(4, p=row) for row in p])
    head = calibrate_head(logits * 2, gold)
    assert head.temperature == pytest.approx(2.0, rel=0.2)
    assert head.kept_accuracy >= 0.97 and 0 < head.kept_share < 1
    cal = Calibration({"h": head})
    cal.save(tmp_path / "c.json")
    again = Calibration.load(tmp_path / "c.json")
    assert again.get("h") == head
    assert again.get("missing") == HeadCalibration()
    np.testing.assert_allclose(again.probs("h", logits).sum(1), 1.0, rtol=1e-6)


def test_platt_scaling_recovers_a_logistic_curve():
    from models.training.fitting import fit_platt

    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 1, 20000)
    correct = rng.uniform(0, 1, 20000) < 1 / (1 + np.exp(-(10 * scores - 6)))
    fitted = fit_platt(scores, correct)
    assert fitted.slope == pytest.approx(10, rel=0.1) and fitted.intercept == pytest.approx(-6, rel=0.1)
    assert fitted.ece < 0.02 and fitted.rows == 20000
