"""The pipelines on the real rare_species builder (conftest's `tiny_data_dir`: small_128 from generated images).

The stand-in (test_pipelines_tinydata) gives the controlled colours, imbalance and shard counts the detailed
tests need; this module checks the same public API against what the real builder writes.
"""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

import pipelines
from tfds_rarespecies import labels


@pytest.fixture
def cfg(tiny_data_dir):
    return pipelines.InputConfig(data_dir=tiny_data_dir, dataset_config="small_128", backbone="mobilenetv2",
                                 image_size=48, batch_size=4, augment="recipe", seed=1)


def test_dataset_info_and_counts_match_the_build(cfg):
    info = pipelines.dataset_info(cfg)
    assert info.full_name.startswith("rare_species/small_128/")
    assert info.names == {rank: labels.names(rank) for rank in labels.RANKS}
    counts = pipelines.label_counts(cfg)
    assert counts.sum() == info.num_examples["train"] and len(counts) == 202


@pytest.mark.parametrize("backbone, low, high", [("mobilenetv2", -1.0, 1.0), ("efficientnetb0", 0.0, 255.0)])
def test_training_and_evaluation_batches(cfg, backbone, low, high):
    cfg = dataclasses.replace(cfg, backbone=backbone, heads=("phylum", "family"), mixup_alpha=0.2)
    images, targets = next(iter(pipelines.make_dataset(cfg, "train", training=True)))
    assert images.shape == (4, 48, 48, 3) and images.dtype == tf.float32
    assert low - 1e-4 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= high + 1e-4
    np.testing.assert_allclose(targets["family"].numpy().sum(axis=1), 1.0, atol=1e-5)
    assert targets["phylum"].shape == (4, 5)
    seen = [name for _, _, names in pipelines.make_dataset(cfg, "validation", training=False, with_file_names=True)
            .as_numpy_iterator() for name in names]
    assert len(seen) == len(set(seen)) == pipelines.dataset_info(cfg).num_examples["validation"]


def test_single_file_splits_are_sharded_by_example(cfg):
    """small_128 of a tiny build is one file per split: two pipelines still read disjoint, complete halves."""
    halves = []
    for index in range(2):
        context = tf.distribute.InputContext(2, index, 2)
        batches = pipelines.make_dataset(cfg, "validation", False, input_context=context, with_file_names=True)
        halves.append([name for _, _, names in batches.as_numpy_iterator() for name in names])
    assert not set(halves[0]) & set(halves[1])
    assert len(halves[0]) + len(halves[1]) == pipelines.dataset_info(cfg).num_examples["validation"]
