"""Temperature scaling on crafted probabilities whose calibration is known by construction."""

import numpy as np
import pytest

from trainer.numbers import calibration, metrics


def _calibrated(examples: int = 3000, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits): calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (examples, classes))
    probabilities = calibration.scaled_probabilities(logits, 1.0)
    labels = np.array([rng.choice(classes, p=row) for row in probabilities])
    return labels, logits


def test_fitted_temperature_lowers_the_nll_of_over_confident_probabilities():
    labels, logits = _calibrated()
    over_confident = calibration.scaled_probabilities(logits, 1 / 3)
    scores = calibration.as_logits(over_confident)
    temperature = calibration.fit_temperature(labels, scores)
    assert temperature == pytest.approx(3.0, rel=0.15)
    before = calibration.negative_log_likelihood(labels, scores)
    after = calibration.negative_log_likelihood(labels, scores, temperature)
    assert after < before - 0.2
    scaled = calibration.scaled_probabilities(scores, temperature)
    assert metrics.expected_calibration_error(labels, scaled) < metrics.expected_calibration_error(
        labels, over_confident) / 3
    np.testing.assert_array_equal(scaled.argmax(axis=1), over_confident.argmax(axis=1))


def test_calibrated_logits_keep_a_temperature_near_one():
    labels, logits = _calibrated(seed=1)
    assert calibration.fit_temperature(labels, logits) == pytest.approx(1.0, abs=0.1)
