"""Where the macro-F1 point estimate sits in its 95% interval: the plain percentile bootstrap over images (the rule
before issue 14) against the family-stratified BCa bootstrap of trainer/numbers/metrics.py.

    .venv/bin/python -m benchmarks.bootstrap_bench

Crafted 202-family test splits with 1 and 6 images per family (the real test split has ~6; a 90/10 protocol's
holds ~1 for many families), each image right with probability --right, a wrong one given a uniformly drawn
other family. Prints one table: the point estimate, both intervals, where the point falls inside each (0% =
at the lower end, 100% = at the upper end) and the time of each.
"""

import time

import numpy as np
from absl import app, flags

from benchmarks import table
from trainer.numbers import metrics

_RESAMPLES = flags.DEFINE_integer("resamples", 1000, "Bootstrap resamples of each interval.")
_RIGHT = flags.DEFINE_float("right", 0.5, "Chance that an image is classified right.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the crafted split and of both bootstraps.")
FAMILIES = 202


def crafted_split(per_family: int, right: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(FAMILIES), per_family)
    predictions = labels.copy()
    wrong = rng.random(len(labels)) > right
    predictions[wrong] = (labels[wrong] + rng.integers(1, FAMILIES, wrong.sum())) % FAMILIES
    return labels, predictions


def percentile_interval(labels: np.ndarray, predictions: np.ndarray, resamples: int, seed: int) -> tuple:
    """The rule before issue 14: resample images from the whole split, take the 2.5 and 97.5 percentiles."""
    rng = np.random.default_rng(seed)
    values = [metrics.macro_f1(labels[chosen], predictions[chosen])
              for chosen in (rng.integers(0, len(labels), len(labels)) for _ in range(resamples))]
    return tuple(np.percentile(values, [2.5, 97.5]))


def _where(point: float, interval: tuple) -> str:
    low, high = interval
    return f"{(point - low) / (high - low):.0%}" if high > low else "-"


def main(argv):
    del argv
    rows = [("images per family", "macro-F1", "percentile 95% CI", "point at", "s", "stratified BCa 95% CI",
             "point at", "s")]
    for per_family in (1, 6):
        labels, predictions = crafted_split(per_family, _RIGHT.value, _SEED.value)
        point = metrics.macro_f1(labels, predictions)
        start = time.perf_counter()
        old = percentile_interval(labels, predictions, _RESAMPLES.value, _SEED.value)
        middle = time.perf_counter()
        new = metrics.bootstrap_intervals(labels, predictions, _RESAMPLES.value, _SEED.value)["macro_f1"]
        end = time.perf_counter()
        rows.append((str(per_family), f"{point:.3f}", f"[{old[0]:.3f}, {old[1]:.3f}]", _where(point, old),
                     f"{middle - start:.1f}", f"[{new[0]:.3f}, {new[1]:.3f}]", _where(point, new),
                     f"{end - middle:.1f}"))
    print(table.markdown(rows))


if __name__ == "__main__":
    app.run(main)
