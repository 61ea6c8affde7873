"""Class weights against hand-computed values, sampling proportions at temperature 0 and 1, and targeted
oversampling multiplying exactly the listed families."""

import collections
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

import pipelines
from pipelines import balancing
from tests.pipelines.test_tinydata import (
    CONFIG,
    COUNTS,
    FAMILY_IDS,
    NAME,
    tiny_data_dir_standin,  # noqa: F401  (fixture)
)

# n = 100 over k = 3 present classes (class 1 has none).
COUNTS_BY_CLASS = [10, 0, 40, 50]


@pytest.mark.parametrize("scheme, expected", [
    # n / (k n_c): 100 / 30, 100 / 120, 100 / 150
    ("balanced", {0: 3.33333, 2: 0.83333, 3: 0.66667}),
    # 1 / sqrt(n_c) = .316228, .158114, .141421; times 100 / sum(n_c / sqrt(n_c)) = 100 / 16.55791
    ("sqrt", {0: 1.90983, 2: 0.95492, 3: 0.85410}),
    # (1 - .9) / (1 - .9 ** n_c) = .153534, .101500, .100518; times 100 / sum(n_c * that) = 100 / 10.62096
    ("effective_number", {0: 1.44554, 2: 0.95563, 3: 0.94639}),
])
def test_class_weights_match_hand_computed_values(scheme, expected):
    weights = balancing.class_weights(COUNTS_BY_CLASS, scheme, beta=0.9)
    assert weights.keys() == expected.keys()
    for label, value in expected.items():
        assert weights[label] == pytest.approx(value, abs=1e-4)
    assert sum(COUNTS_BY_CLASS[label] * weight for label, weight in weights.items()) == pytest.approx(100)


def test_effective_number_tends_to_balanced_and_to_uniform():
    balanced = balancing.class_weights(COUNTS_BY_CLASS, "balanced")
    assert balancing.class_weights(COUNTS_BY_CLASS, "effective_number", beta=0.999999) == pytest.approx(
        balanced, rel=1e-3)
    assert list(balancing.class_weights(COUNTS_BY_CLASS, "effective_number", beta=1e-9).values()) == pytest.approx(
        [1.0, 1.0, 1.0])


def test_target_distribution_interpolates_natural_and_uniform():
    np.testing.assert_allclose(balancing.target_distribution(COUNTS_BY_CLASS, 1.0), [0.1, 0, 0.4, 0.5])
    np.testing.assert_allclose(balancing.target_distribution(COUNTS_BY_CLASS, 0.0), [1 / 3, 0, 1 / 3, 1 / 3])
    half = np.sqrt([10, 0, 40, 50])
    np.testing.assert_allclose(balancing.target_distribution(COUNTS_BY_CLASS, 0.5), half / half.sum())


@pytest.mark.parametrize("temperature", [0.0, 0.5, 1.0])
def test_resampling_reaches_the_target_proportions(temperature):
    """4,000 draws from a 100:0:20:5 stream; tolerance 0.03 is over 4 binomial standard deviations."""
    counts = [100, 0, 20, 5]
    labels = tf.data.Dataset.from_tensor_slices(np.repeat([0, 2, 3], [100, 20, 5])).shuffle(125, seed=1).repeat()
    sampled = balancing.resample(labels, lambda label: label, counts, temperature, seed=2)
    drawn = np.bincount(list(sampled.take(4000).as_numpy_iterator()), minlength=4) / 4000
    np.testing.assert_allclose(drawn, balancing.target_distribution(counts, temperature), atol=0.03)


@pytest.fixture
def cfg(tiny_data_dir_standin):  # noqa: F811
    return pipelines.InputConfig(data_dir=tiny_data_dir_standin, dataset_config=CONFIG, backbone="baseline_cnn",
                                 image_size=32, batch_size=8, dataset_name=NAME, deterministic=True)


def _family_shares(cfg, batches):
    labels = np.concatenate([labels for _, labels in pipelines.make_dataset(cfg, "train", True).take(batches)
                             .as_numpy_iterator()])
    return np.array([np.mean(labels == family) for family in FAMILY_IDS])


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_pipeline_samples_families_by_temperature(cfg, temperature):
    """400 examples of the 24:12:6:4 tiny train split; tolerance 0.07 is about 3 binomial deviations."""
    shares = _family_shares(dataclasses.replace(cfg, sampling_temperature=temperature), batches=50)
    np.testing.assert_allclose(shares, balancing.target_distribution(COUNTS["train"], temperature), atol=0.07)


def test_oversampling_repeats_exactly_the_listed_families(cfg):
    extra = 2
    cfg = dataclasses.replace(cfg, oversample_labels=("apidae", "unionidae"), oversample_extra_views=extra,
                              batch_size=6)
    epoch = sum(COUNTS["train"]) + extra * (COUNTS["train"][1] + COUNTS["train"][3])
    assert epoch % cfg.batch_size == 0 and pipelines.steps_per_epoch(cfg) == epoch // cfg.batch_size
    seen = collections.Counter(
        name.decode() for _, _, names in pipelines.make_dataset(cfg, "train", True, with_file_names=True)
        .take(epoch // cfg.batch_size).as_numpy_iterator() for name in names)
    assert len(seen) == sum(COUNTS["train"])
    for name, views in seen.items():
        assert views == (1 + extra if "_apidae_" in name or "_unionidae_" in name else 1), name


def test_oversampled_views_are_augmented_independently(cfg):
    cfg = dataclasses.replace(cfg, oversample_labels=("unionidae",), oversample_extra_views=3, augment="recipe",
                              batch_size=2)
    views = collections.defaultdict(list)
    one_epoch = pipelines.make_dataset(cfg, "train", True, with_file_names=True).take(pipelines.steps_per_epoch(cfg))
    for images, _, names in one_epoch.as_numpy_iterator():
        for image, name in zip(images, names):
            views[name].append(image)
    repeated = [images for name, images in views.items() if b"_unionidae_" in name]
    assert repeated and all(len(images) == 4 for images in repeated)
    assert all(not np.allclose(images[0], images[1]) for images in repeated)


def test_unknown_oversampled_family_is_named(cfg):
    with pytest.raises(ValueError, match="unknown family names pteropodidae"):
        pipelines.make_dataset(dataclasses.replace(cfg, oversample_labels=("pteropodidae",)), "train", True)
