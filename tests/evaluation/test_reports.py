"""The evaluation room's metrics and reports on crafted arrays: numbers against scikit-learn, hand-checked
taxonomy and calibration figures, and the report files a person opens."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn import metrics as skm

from tfds_rarespecies import labels as label_lists
from trainer.evaluation import reports
from trainer.numbers import metrics

FAMILIES = label_lists.families()
FAMILY_TO_PHYLUM = label_lists.phylum_of("family")


def _crafted(examples: int, classes: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and softmax probabilities of a decent but imperfect classifier."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, examples)
    logits = rng.normal(0, 1, (examples, classes))
    logits[np.arange(examples), labels] += rng.uniform(0, 3, examples)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, probabilities


def test_headline_metrics_equal_scikit_learn():
    labels, probabilities = _crafted(500)
    predictions = probabilities.argmax(axis=1)
    got = metrics.headline_metrics(labels, probabilities)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(labels, predictions))
    assert got["macro_f1"] == pytest.approx(skm.f1_score(labels, predictions, average="macro"))
    assert got["top5_accuracy"] == pytest.approx(skm.top_k_accuracy_score(labels, probabilities, k=5))
    assert got["macro_auc"] == pytest.approx(skm.roc_auc_score(labels, probabilities, multi_class="ovr"))
    assert 0.3 < got["accuracy"] < 0.9 < got["top5_accuracy"]


def test_top5_of_five_labels_or_fewer_is_one_and_quiet():
    labels, probabilities = _crafted(50)
    few = probabilities[:, :4] / probabilities[:, :4].sum(axis=1, keepdims=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert metrics.headline_metrics(labels % 4, few)["top5_accuracy"] == 1.0


def test_macro_auc_averages_the_present_classes_only():
    labels, probabilities = _crafted(300)
    labels[labels == 7] = 6
    present = np.unique(labels)
    expected = np.mean([skm.roc_auc_score(labels == c, probabilities[:, c]) for c in present])
    assert metrics.headline_metrics(labels, probabilities)["macro_auc"] == pytest.approx(expected)


def test_per_class_table_matches_scikit_learn_worst_first():
    labels, probabilities = _crafted(400)
    predictions = probabilities.argmax(axis=1)
    table = metrics.per_class_table(labels, predictions, FAMILIES, FAMILY_TO_PHYLUM)
    expected = skm.classification_report(labels, predictions, output_dict=True, zero_division=0)
    for row in table.itertuples():
        scores = expected[str(FAMILIES.index(row.family))]
        assert (row.precision, row.recall, row.f1, row.support) == pytest.approx(
            (scores["precision"], scores["recall"], scores["f1-score"], scores["support"]))
        assert row.phylum == FAMILY_TO_PHYLUM[row.family]
    assert table["f1"].is_monotonic_increasing and len(table) == 8


def test_bootstrap_interval_holds_the_estimate_and_narrows_with_more_data():
    widths = {}
    for examples in (100, 2000):
        labels, probabilities = _crafted(examples, seed=examples)
        predictions = probabilities.argmax(axis=1)
        intervals = metrics.bootstrap_intervals(labels, predictions, resamples=200, seed=0)
        point = metrics.headline_metrics(labels, probabilities)
        for name, (low, high) in intervals.items():
            assert low <= point[name] <= high
        widths[examples] = intervals["accuracy"][1] - intervals["accuracy"][0]
        assert metrics.bootstrap_intervals(labels, predictions, resamples=200, seed=0) == intervals
    assert widths[2000] < widths[100] / 2


def test_confusion_counts_sum_to_the_split_and_top_confusions_share_the_true_class():
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    predictions = np.array([0, 1, 1, 2, 1, 1, 0])
    confusion = metrics.confusion_counts(labels, predictions, num_classes=5)
    assert confusion.shape == (5, 5) and confusion.sum() == len(labels)
    table = metrics.top_confusions(confusion, FAMILIES, FAMILY_TO_PHYLUM)
    assert table.iloc[0][["true", "predicted", "count"]].tolist() == [FAMILIES[0], FAMILIES[1], 2]
    assert table.iloc[0]["share_of_true"] == pytest.approx(0.5)
    assert table["count"].sum() == np.sum(labels != predictions)


def test_taxonomy_metrics_on_a_hand_checked_example():
    ids = {name: FAMILIES.index(name) for name in ("acroporidae", "agariciidae", "accipitridae", "acipenseridae")}
    assert [FAMILY_TO_PHYLUM[n] for n in ids] == ["cnidaria", "cnidaria", "chordata", "chordata"]
    truth = ["acroporidae", "acroporidae", "agariciidae", "accipitridae", "accipitridae", "acipenseridae"]
    guess = ["acroporidae", "agariciidae", "agariciidae", "acipenseridae", "acroporidae", "acipenseridae"]
    got = metrics.taxonomy_metrics(np.array([ids[n] for n in truth]), np.array([ids[n] for n in guess]),
                                   FAMILIES, FAMILY_TO_PHYLUM)
    assert got["phylum_accuracy"] == pytest.approx(5 / 6)
    assert got["errors"] == 3
    assert got["errors_within_phylum_share"] == pytest.approx(2 / 3)
    assert got["per_phylum"]["chordata"] == {"examples": 3, "family_accuracy": pytest.approx(1 / 3),
                                             "phylum_accuracy": pytest.approx(2 / 3)}


def _confidence_set(confidences, accuracies, per_level: int = 100, classes: int = 10):
    """Each confidence level gets per_level images, of which the given share is predicted right."""
    labels, rows = [], []
    for confidence, accuracy in zip(confidences, accuracies):
        row = np.full(classes, (1 - confidence) / (classes - 1))
        row[0] = confidence
        rows += [row] * per_level
        right = round(accuracy * per_level)
        labels += [0] * right + [1] * (per_level - right)
    return np.array(labels), np.array(rows)


def test_expected_calibration_error_is_zero_when_calibrated_and_positive_when_over_confident():
    levels = (0.35, 0.5, 0.7, 0.9, 1.0)
    assert metrics.expected_calibration_error(*_confidence_set(levels, levels)) == pytest.approx(0, abs=1e-9)
    over = metrics.expected_calibration_error(*_confidence_set((0.95, 0.99), (0.5, 0.6)))
    assert over == pytest.approx(((0.95 - 0.5) + (0.99 - 0.6)) / 2)
    bins = metrics.reliability_bins(*_confidence_set(levels, levels))
    assert len(bins) == metrics.CALIBRATION_BINS and bins["count"].sum() == 500


def test_confident_mistakes_are_wrong_and_surest_first():
    labels, probabilities = _crafted(200)
    indices = metrics.confident_mistakes(labels, probabilities, limit=10)
    assert len(indices) == 10
    assert np.all(probabilities[indices].argmax(axis=1) != labels[indices])
    assert np.all(np.diff(probabilities[indices].max(axis=1)) <= 0)


def test_write_report_writes_every_file_for_all_202_families(tmp_path):
    labels, probabilities = _crafted(400, classes=len(FAMILIES), seed=3)
    file_names = [f"{i}_eol-full-size-copy.jpg" for i in range(len(labels))]
    loaded = []

    def load_images(indices):
        loaded.extend(indices)
        return [np.full((90 + i % 50, 120, 3), i % 255, np.uint8) for i in indices]

    phylum_only = {family: (phylum, "", "") for family, phylum in FAMILY_TO_PHYLUM.items()}
    report = reports.write_report(tmp_path, labels, probabilities,
                                  metrics.LabelSpace(FAMILIES, FAMILY_TO_PHYLUM, ancestors=phylum_only),
                                  metrics.Resampling(resamples=50), title="test",
                                  gallery=reports.Gallery(file_names, load_images), extra={"split": "test"})
    written = json.loads((tmp_path / reports.METRICS_JSON).read_text())
    assert written["split"] == "test" and written["examples"] == 400
    assert {name: written[name] for name in metrics.GAP_METRICS} == {name: report.metrics[name]
                                                                     for name in metrics.GAP_METRICS}
    assert written["accuracy_ci95"][0] <= written["accuracy"] <= written["accuracy_ci95"][1]
    assert 3 <= written["mistake_severity"] <= 4 and written["hierarchical_distance_at_5"] > 3
    assert list(written["ranks"]) == ["phylum"] and written["ranks"]["phylum"]["examples"] == 400
    full = metrics.risk_coverage_curve(probabilities.max(axis=1), probabilities.argmax(axis=1) == labels)
    assert written["aurc"] == pytest.approx(metrics.area_under_risk_coverage(full))
    shown = written["risk_coverage"]
    assert len(shown["coverage"]) == metrics.RISK_COVERAGE_POINTS and shown["coverage"][-1] == 1.0
    assert set(shown["risk"]) <= set(full["risk"])
    for name in (reports.CONFUSION_PNG, reports.RELIABILITY_PNG, reports.RISK_COVERAGE_PNG, reports.MISTAKES_PNG):
        with Image.open(tmp_path / name) as image:
            image.verify()
    with Image.open(tmp_path / reports.CONFUSION_PNG) as image:
        assert min(image.size) > 1500
    per_class = pd.read_csv(tmp_path / reports.PER_CLASS_CSV)
    assert per_class["support"].sum() == 400
    confusions = pd.read_csv(tmp_path / reports.CONFUSIONS_CSV)
    assert list(confusions.columns) == ["true", "predicted", "count", "share_of_true", "same_phylum"]
    page = (tmp_path / reports.MISTAKES_HTML).read_text()
    sources = [part.split('"', 1)[0] for part in page.split('src="')[1:]]
    assert len(sources) == len(loaded) == metrics.GALLERY_SIZE
    assert all((tmp_path / source).is_file() for source in sources)
    summary = reports.format_summary(report, heading="test split")
    assert "macro-F1" in summary and "top confusions" in summary and "mistake severity" in summary
    assert len(summary.splitlines()) <= 15


def test_nan_metrics_are_written_as_null(tmp_path):
    labels = np.zeros(4, dtype=int)
    probabilities = np.tile(np.eye(6)[0], (4, 1))
    report = reports.write_report(tmp_path, labels, probabilities, metrics.LabelSpace(FAMILIES, FAMILY_TO_PHYLUM),
                                  metrics.Resampling(resamples=10))
    assert np.isnan(report.metrics["macro_auc"])
    written = json.loads((tmp_path / reports.METRICS_JSON).read_text())
    assert written["macro_auc"] is None and written["accuracy"] == 1.0
    summary = reports.format_summary(report)
    assert "no family errors" in summary and "nan%" not in summary
