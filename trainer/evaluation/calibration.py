"""Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017): one scalar fitted
on the validation split so that softmax(logits / T) states confidences that hold, which the roll-up's
per-rank thresholds and the abstention rule rely on. It divides every logit alike, so no prediction changes.

A leaf module (numpy, scipy) the training room may import. Models that give probabilities rather than logits
pass `as_logits(probabilities)`: softmax(log p) is p again.
"""

import numpy as np
from scipy import optimize, special

TEMPERATURE_BOUNDS = (0.05, 20.0)
_SMALLEST = np.finfo(np.float64).tiny


def as_logits(probabilities: np.ndarray) -> np.ndarray:
    """Logits whose softmax is `probabilities` (zeros kept finite)."""
    return np.log(np.maximum(np.asarray(probabilities, dtype=np.float64), _SMALLEST))


def scaled_probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / temperature), row by row."""
    return special.softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)


def negative_log_likelihood(labels: np.ndarray, logits: np.ndarray, temperature: float = 1.0) -> float:
    """Mean -log softmax(logits / temperature)[label]: the loss temperature scaling minimises."""
    log_probabilities = special.log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)
    return float(-log_probabilities[np.arange(len(labels)), labels].mean())


def fit_temperature(labels: np.ndarray, logits: np.ndarray) -> float:
    """The temperature in TEMPERATURE_BOUNDS minimising the validation NLL (> 1 softens an over-confident
    model, < 1 sharpens a timid one); searched on log T, where the NLL is smooth and unimodal in practice."""
    labels = np.asarray(labels, dtype=np.int64)
    result = optimize.minimize_scalar(lambda log_t: negative_log_likelihood(labels, logits, float(np.exp(log_t))),
                                      bounds=np.log(TEMPERATURE_BOUNDS), method="bounded")
    return float(np.exp(result.x))
