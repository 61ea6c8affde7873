"""Taxonomy-aware error, the stratified BCa bootstrap and the risk-coverage curve, on crafted arrays with
hand-computed answers."""

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from trainer.numbers import metrics

# Six families: b shares a's order, c its class, d its phylum, e nothing; f's class and order are unknown.
FAMILIES = ("a", "b", "c", "d", "e", "f")
ANCESTORS = pd.DataFrame({"phylum": ["chordata", "chordata", "chordata", "chordata", "cnidaria", "chordata"],
                          "class": ["mammalia", "mammalia", "mammalia", "aves", "anthozoa", ""],
                          "order": ["primates", "primates", "carnivora", "passeriformes", "scleractinia", ""]},
                         index=list(FAMILIES))
A, B, C, D, E, F = range(6)


def _heights(ancestors=ANCESTORS, names=FAMILIES) -> np.ndarray:
    return metrics.lca_heights(metrics.taxonomy_paths(names, ancestors))


def test_lca_heights_of_family_labels_count_the_ranks_climbed_to_the_common_ancestor():
    heights = _heights()
    assert heights[A].tolist() == [0, 1, 2, 3, 4, 3]
    assert heights[E].tolist() == [4, 4, 4, 4, 0, 4]
    assert heights[F, F] == 0 and (heights == heights.T).all()
    as_dict = {name: tuple(row) for name, row in ANCESTORS.iterrows()}
    np.testing.assert_array_equal(_heights(as_dict), heights)


def test_lca_heights_of_species_labels_reach_six():
    ancestors = {"s1": ("chordata", "mammalia", "primates", "hominidae", "pongo"),
                 "s2": ("chordata", "mammalia", "primates", "hominidae", "pongo"),
                 "s3": ("chordata", "mammalia", "primates", "hominidae", "gorilla"),
                 "s4": ("chordata", "mammalia", "carnivora", "felidae", "panthera"),
                 "s5": ("arthropoda", "insecta", "lepidoptera", "papilionidae", "ornithoptera")}
    heights = _heights(ancestors, tuple(ancestors))
    assert heights[0].tolist() == [0, 1, 2, 4, 6]


def test_mistake_severity_averages_the_heights_of_the_mistakes_only():
    labels = np.full(6, A)
    predictions = np.array([A, B, C, D, E, F])
    assert metrics.mistake_severity(labels, predictions, _heights()) == pytest.approx((1 + 2 + 3 + 4 + 3) / 5)
    assert np.isnan(metrics.mistake_severity(labels, labels, _heights()))


def test_the_severity_floor_is_the_nearest_other_label_of_each_mistaken_truth():
    """a's nearest other family is its sister b (1), c's is a or b of its class (2), e has nobody (4); the
    floor depends on which images are wrong, never on what they were called."""
    labels = np.array([A, A, C, E, B])
    heights = _heights()
    assert metrics.mistake_severity_floor(labels, np.array([A, E, D, D, B]), heights) == pytest.approx(
        (1 + 2 + 4) / 3)
    assert metrics.mistake_severity_floor(labels, np.array([A, B, A, A, B]), heights) == pytest.approx(
        (1 + 2 + 4) / 3)
    assert np.isnan(metrics.mistake_severity_floor(labels, labels, heights))
    assert metrics.mistake_severity(labels, np.array([A, B, A, A, B]), heights) >= (1 + 2 + 4) / 3


def test_hierarchical_distance_at_k_averages_the_top_k_heights_over_all_images():
    probabilities = np.array([[0.50, 0.30, 0.01, 0.01, 0.17, 0.01],    # a: ranks a, b, e
                              [0.10, 0.01, 0.40, 0.19, 0.29, 0.01]])   # e: ranks c, e, d
    labels = np.array([A, E])
    heights = _heights()
    assert metrics.hierarchical_distance_at_k(labels, probabilities, heights, 1) == pytest.approx((0 + 4) / 2)
    assert metrics.hierarchical_distance_at_k(labels, probabilities, heights, 3) == pytest.approx(
        ((0 + 1 + 4) / 3 + (4 + 0 + 4) / 3) / 2)
    got = metrics.severity_metrics(labels, probabilities, FAMILIES, ANCESTORS)
    assert got["mistake_severity"] == 4 and got["hierarchical_distance_at_1"] == 2
    assert got["mistake_severity_floor"] == 4  # e is the only mistaken truth, alone in its phylum
    assert got["lca_root_height"] == 4


def test_taxonomy_paths_refuse_a_label_without_ancestors_in_one_line():
    with pytest.raises(ValueError, match="first: g") as raised:
        metrics.taxonomy_paths((*FAMILIES, "g"), ANCESTORS)
    assert "\n" not in str(raised.value)


def _one_image_per_family(families: int = 202, right_share: float = 0.44, seed: int = 0):
    """The split of the issue: every family once, ~44% right, the rest wrongly called another family."""
    rng = np.random.default_rng(seed)
    labels = np.arange(families)
    predictions = labels.copy()
    wrong = rng.permutation(families)[:round(families * (1 - right_share))]
    predictions[wrong] = (wrong + rng.integers(1, families, len(wrong))) % families
    return labels, predictions


def test_bca_interval_is_centred_on_a_split_of_one_image_per_family():
    labels, predictions = _one_image_per_family()
    assert np.mean(labels == predictions) == pytest.approx(0.44, abs=0.005)
    point = {"accuracy": skm.accuracy_score(labels, predictions), "macro_f1": metrics.macro_f1(labels, predictions)}
    intervals = metrics.bootstrap_intervals(labels, predictions, resamples=400, seed=0)
    for name, (low, high) in intervals.items():
        position = (point[name] - low) / (high - low)
        assert 0.25 < position < 0.75, (name, low, point[name], high)
        assert 0.05 < high - low < 0.3


def test_stratified_donors_stay_in_their_stratum_and_pool_the_singletons():
    strata = np.array([0, 0, 0, 1, 1, 2, 3, 4])
    donors = metrics.stratified_donors(strata, 300, np.random.default_rng(0))
    assert donors.shape == (300, 8)
    assert (strata[donors[:, :5]] == strata[:5]).all()
    assert set(np.unique(donors[:, 5:])) == {5, 6, 7}


def test_bca_interval_is_the_percentile_interval_without_bias_or_skew():
    replicates = np.random.default_rng(0).normal(0.5, 0.1, 4000)
    jackknife = np.array([-1.0, 1.0, -1.0, 1.0])
    low, high = metrics.bca_interval(float(np.median(replicates)), replicates, jackknife)
    np.testing.assert_allclose((low, high), np.quantile(replicates, [0.025, 0.975]), atol=1e-3)
    shifted = metrics.bca_interval(0.6, replicates, jackknife)
    assert shifted[0] > low and shifted[1] > high


def test_risk_coverage_curve_and_aurc_on_a_hand_checked_case():
    curve = metrics.risk_coverage_curve(np.array([0.9, 0.8, 0.8, 0.5]), np.array([True, False, True, False]))
    assert curve["threshold"].tolist() == [0.9, 0.8, 0.5]
    assert curve["coverage"].tolist() == [0.25, 0.75, 1.0]
    np.testing.assert_allclose(curve["risk"], [0, 1 / 3, 0.5])
    assert metrics.area_under_risk_coverage(curve) == pytest.approx(1 / 3 * 0.5 + 0.5 * 0.25)
    correct = np.array([True] * 6 + [False] * 4)
    ranked = metrics.area_under_risk_coverage(metrics.risk_coverage_curve(np.linspace(1, 0.1, 10), correct))
    reversed_ = metrics.area_under_risk_coverage(metrics.risk_coverage_curve(np.linspace(0.1, 1, 10), correct))
    assert ranked < 0.4 < reversed_


def test_upper_ranks_judge_the_ancestors_of_the_predicted_label():
    probabilities = np.array([[0.3, 0.3, 0.4, 0, 0, 0],     # a called c: carnivora, though primates holds 0.6
                              [0, 0.9, 0.1, 0, 0, 0],       # a called b: primates
                              [0, 0, 0, 0, 1.0, 0],         # e: right
                              [0, 0, 0, 1.0, 0, 0]])        # f (class unknown) called d: phylum still right
    labels = np.array([A, A, E, F])
    got = metrics.upper_rank_metrics(labels, probabilities, FAMILIES, ANCESTORS, resamples=20)
    assert list(got) == ["phylum", "class", "order"]
    assert got["phylum"]["accuracy"] == 1.0 and got["phylum"]["examples"] == 4
    assert got["class"]["accuracy"] == 1.0 and got["class"]["examples"] == 3
    assert got["order"]["accuracy"] == pytest.approx(2 / 3)
    assert got["phylum"]["accuracy"] == metrics.taxonomy_metrics(
        labels, probabilities.argmax(axis=1), FAMILIES, ANCESTORS["phylum"].to_dict())["phylum_accuracy"]
