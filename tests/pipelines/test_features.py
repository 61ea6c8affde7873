"""The frozen-feature cache: equal to a direct forward pass, no forward pass on a hit, recomputed when any key
part changes."""

import dataclasses

import keras
import numpy as np
import pytest

import pipelines
from tests.pipelines.test_tinydata import (
    CONFIG,
    COUNTS,
    NAME,
    tiny_data_dir_standin,  # noqa: F401  (fixture)
)
from tfds_rarespecies.labels import RANKS


class CountingPool(keras.layers.Layer):
    """Global average pooling that counts the batches it sees, in eager and graph mode alike."""

    def build(self, input_shape):
        self.batches = self.add_weight(shape=(), initializer="zeros", dtype="int32", trainable=False)

    def call(self, images):
        self.batches.assign_add(1)
        return keras.ops.mean(images, axis=(1, 2))


@pytest.fixture
def model():
    inputs = keras.Input((None, None, 3))
    pooled = CountingPool()(keras.layers.Conv2D(5, 3, kernel_initializer="he_normal")(inputs))
    return keras.Model(inputs, pooled)


def _forward_passes(model) -> int:
    return int(model.layers[-1].batches.numpy())


@pytest.fixture
def cfg(tiny_data_dir_standin):  # noqa: F811
    return pipelines.InputConfig(data_dir=tiny_data_dir_standin, dataset_config=CONFIG, backbone="mobilenetv2",
                                 image_size=32, batch_size=4, dataset_name=NAME)


def test_features_equal_a_direct_forward_pass(model, cfg, tmp_path):
    features = pipelines.cached_features(model, "random-init", cfg, "validation", tmp_path)
    direct = list(pipelines.make_dataset(cfg, "validation", False, with_file_names=True).as_numpy_iterator())
    np.testing.assert_allclose(features.embeddings,
                               np.concatenate([model(images).numpy() for images, _, _ in direct]), atol=1e-6)
    np.testing.assert_array_equal(features.labels["family"], np.concatenate([labels for _, labels, _ in direct]))
    np.testing.assert_array_equal(features.file_names.astype(bytes), np.concatenate([n for _, _, n in direct]))
    assert features.embeddings.shape == (sum(COUNTS["validation"]), 5)
    assert set(features.labels) == set(RANKS)
    for rank in RANKS:  # the stand-in gives every image its family's first species: one id per family
        assert features.labels[rank].shape == features.labels["family"].shape and (features.labels[rank] >= 0).all()


def test_second_call_reads_the_cache_without_a_forward_pass(model, cfg, tmp_path):
    first = pipelines.cached_features(model, "random-init", cfg, "validation", tmp_path)
    passes = _forward_passes(model)
    assert passes == -(-sum(COUNTS["validation"]) // cfg.batch_size)
    second = pipelines.cached_features(model, "random-init", cfg, "validation", tmp_path)
    assert _forward_passes(model) == passes
    np.testing.assert_array_equal(first.embeddings, second.embeddings)
    np.testing.assert_array_equal(first.file_names, second.file_names)
    for rank in RANKS:
        np.testing.assert_array_equal(first.labels[rank], second.labels[rank])


@pytest.mark.parametrize("weights, split, fields", [
    ("retrained", "validation", {}), ("random-init", "test", {}), ("random-init", "validation", {"image_size": 40}),
    ("random-init", "validation", {"backbone": "resnet50v2"})], ids=["weights", "split", "image_size", "backbone"])
def test_any_key_change_recomputes(model, cfg, tmp_path, weights, split, fields):
    pipelines.cached_features(model, "random-init", cfg, "validation", tmp_path)
    passes = _forward_passes(model)
    pipelines.cached_features(model, weights, dataclasses.replace(cfg, **fields), split, tmp_path)
    assert _forward_passes(model) > passes
    assert len(list(tmp_path.glob("*.npz"))) == 2


def test_features_feed_a_head(model, cfg, tmp_path):
    features = pipelines.cached_features(model, "random-init", cfg, "train", tmp_path)
    batches = list(features.dataset(batch_size=16, heads=("phylum", "family"), shuffle_seed=0).as_numpy_iterator())
    assert sum(len(embeddings) for embeddings, _ in batches) == sum(COUNTS["train"])
    assert set(batches[0][1]) == {"family", "phylum"}
