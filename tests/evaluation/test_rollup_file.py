"""calibration.json on crafted validation probabilities: what fit stores, the round trip, and a damaged file."""

import dataclasses

import numpy as np
import pytest

from tfds_rarespecies import labels
from trainer.numbers import calibration, rollup
from trainer.training import calibration_file

LABEL_NAMES = {"family": labels.names("family"), "phylum": labels.names("phylum")}


def _validation(examples: int = 300, seed: int = 0):
    """Family ids with over-confident family and phylum heads that are right most of the time."""
    rng = np.random.default_rng(seed)
    tree = rollup.label_tree(LABEL_NAMES, labels.shipped())
    truth = rng.integers(0, len(LABEL_NAMES["family"]), examples)
    heads = {}
    for rank, ids in (("family", truth), ("phylum", tree.leaf_paths[truth, 0])):
        logits = rng.normal(0, 1, (examples, len(LABEL_NAMES[rank])))
        logits[np.arange(examples), ids] += rng.uniform(0, 4, examples)
        heads[rank] = calibration.scaled_probabilities(logits, 0.3)
    return truth, heads


def test_fit_stores_sorted_confidences_whose_thresholds_reach_the_precision(tmp_path):
    truth, heads = _validation()
    fitted = calibration.fit_rollup(rollup.label_tree(LABEL_NAMES, labels.shipped()), truth, heads)
    assert fitted.ranks == ("phylum", "class", "order", "family") and set(fitted.temperatures) == {"phylum", "family"}
    assert all(temperature > 1 for temperature in fitted.temperatures.values())  # softens over-confident heads
    for head in fitted.temperatures:
        assert fitted.validation["nll_scaled"][head] < fitted.validation["nll"][head]
    tree = rollup.label_tree(LABEL_NAMES, labels.shipped())
    ids, confidences = tree.predictions(fitted.scaled(heads))
    right = ids == tree.leaf_paths[truth]
    thresholds = fitted.thresholds(0.9)
    np.testing.assert_array_equal(thresholds, rollup.precision_thresholds(confidences, right, 0.9))
    for column, rank in enumerate(fitted.ranks):
        assert np.all(np.diff(fitted.confidences[rank]) <= 0)
        if np.isfinite(thresholds[column]):
            assert right[confidences[:, column] >= thresholds[column], column].mean() >= 0.9
    calibration_file.write(tmp_path, fitted)
    again = calibration_file.read(tmp_path)
    assert again.temperatures == pytest.approx(fitted.temperatures)
    np.testing.assert_array_equal(again.thresholds(0.9), thresholds)
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]


def test_no_file_is_none_and_a_damaged_one_is_one_line(tmp_path):
    assert calibration_file.read(tmp_path) is None
    (tmp_path / "calibration.json").write_text('{"ranks": ["family"]')
    with pytest.raises(calibration_file.CalibrationFileError,
                       match="calibration.json: not a calibration file") as raised:
        calibration_file.read(tmp_path)
    assert "\n" not in str(raised.value) and "--rollup_precision=0.95" in str(raised.value)


def test_a_calibration_on_too_few_images_says_so_and_claims_no_precision():
    ranks = ("phylum", "family")
    few = calibration.RollupCalibration("family", ranks, {"family": 1.0},
                                        {rank: np.linspace(1, 0.5, 4) for rank in ranks},
                                        {rank: np.ones(4, bool) for rank in ranks})
    note = few.shortfall(0.95)
    assert "4 validation images" in note and "at least 60 answers" in note and "phylum, family" in note
    assert np.isinf(few.thresholds(0.95)).all()
    enough = dataclasses.replace(few, confidences={rank: np.linspace(1, 0.5, 60) for rank in ranks},
                                 correct={rank: np.ones(60, bool) for rank in ranks})
    assert enough.shortfall(0.95) == "" and np.isfinite(enough.thresholds(0.95)).all()
