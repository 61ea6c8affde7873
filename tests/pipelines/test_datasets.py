"""make_dataset on the tiny stand-in: shapes and scaling per backbone, augmentation only in training with labels
kept aligned, MixUp/CutMix mixtures, both augmentation placements, sample weights, determinism, sharding."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

import pipelines
from pipelines import augmentation, backbones, balancing, datasets, reading
from tests.pipelines.test_tinydata import (
    COLOURS,
    CONFIG,
    COUNTS,
    FAMILY_IDS,
    NAME,
    tiny_data_dir_standin,  # noqa: F401  (fixture)
)
from tfds_rarespecies import labels

PALETTE = np.array(list(COLOURS.values()), np.float32)
SIZE = 32


@pytest.fixture
def cfg(tiny_data_dir_standin):  # noqa: F811
    """Raw 0..255 scaling (EfficientNet), so pixels can be compared with the family colours."""
    return pipelines.InputConfig(data_dir=tiny_data_dir_standin, dataset_config=CONFIG, backbone="efficientnetb0",
                                 image_size=SIZE, batch_size=4, dataset_name=NAME, seed=3)


def _batches(cfg, split, training, count=None, **kwargs):
    dataset = pipelines.make_dataset(cfg, split, training, **kwargs)
    return list((dataset.take(count) if count else dataset).as_numpy_iterator())


def _nearest_family(images):
    """Family id whose colour is nearest to each image's mean colour."""
    means = images.reshape(len(images), -1, 3).mean(axis=1)
    return np.array(FAMILY_IDS)[np.argmin(((means[:, None] - PALETTE[None]) ** 2).sum(-1), axis=1)]


@pytest.mark.parametrize("backbone, low, high", [
    ("baseline_cnn", 0.0, 1.0), ("mobilenetv2", -1.0, 1.0), ("densenet121", -2.2, 2.7),
    ("efficientnetb0", 0.0, 255.0)])
def test_shapes_dtypes_and_scaling_per_backbone(cfg, backbone, low, high):
    cfg = dataclasses.replace(cfg, backbone=backbone)
    raw = dataclasses.replace(cfg, augment_on_device=True)
    augmented = dataclasses.replace(cfg, augment="recipe")  # scaled by pipelines.cpu_augmentation's table
    for config, training in ((cfg, True), (cfg, False), (augmented, True)):
        images, labels = _batches(config, "validation", training, count=1)[0]
        assert images.shape == (4, SIZE, SIZE, 3) and images.dtype == np.float32
        assert labels.shape == (4,) and labels.dtype == np.int32
        assert low - 1e-4 <= images.min() and images.max() <= high + 1e-4
        assert images.max() - images.min() > (high - low) / 10
    scaled = np.concatenate([images for images, _ in _batches(cfg, "validation", False)])
    unscaled = np.concatenate([images for images, _ in _batches(raw, "validation", False)])
    np.testing.assert_allclose(scaled, backbones.get_backbone(backbone).preprocess(unscaled).numpy(), atol=1e-5)


def test_evaluation_ignores_augmentation_and_mixing(cfg):
    plain = _batches(cfg, "validation", False)
    augmented = dataclasses.replace(cfg, augment="recipe", mixup_alpha=0.4, cutmix_alpha=1.0, cache_eval=False)
    for (images, labels), (other_images, other_labels) in zip(plain, _batches(augmented, "validation", False)):
        np.testing.assert_array_equal(images, other_images)
        np.testing.assert_array_equal(labels, np.argmax(other_labels, axis=1))
    assert sum(len(labels) for _, labels in plain) == sum(COUNTS["validation"])


@pytest.mark.parametrize("train_cache_bytes", [pipelines.InputConfig.train_cache_bytes, 0],
                         ids=["cached", "decoded_per_step"])
def test_training_augmentation_changes_images_and_keeps_labels(cfg, train_cache_bytes):
    plain = dataclasses.replace(cfg, deterministic=True, train_cache_bytes=train_cache_bytes)
    augmented = dataclasses.replace(plain, augment="recipe")
    plain_images = {name: image for images, _, names in _batches(plain, "train", True, 6, with_file_names=True)
                    for image, name in zip(images, names)}
    changed = 0
    for images, labels, names in _batches(augmented, "train", True, 6, with_file_names=True):
        np.testing.assert_array_equal(_nearest_family(images), labels)
        changed += sum(not np.allclose(image, plain_images[name], atol=1.0)
                       for image, name in zip(images, names) if name in plain_images)
    assert changed >= 12


@pytest.mark.parametrize("mixup_alpha, cutmix_alpha", [(0.4, 0.0), (0.0, 1.0), (0.4, 1.0)])
def test_mixed_labels_sum_to_one_and_match_the_pixels(cfg, mixup_alpha, cutmix_alpha):
    cfg = dataclasses.replace(cfg, mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, heads=("phylum", "family"))
    mixed = 0
    for images, labels in _batches(cfg, "train", True, 6):
        for head in ("family", "phylum"):
            assert labels[head].dtype == np.float32 and labels[head].min() >= 0
            np.testing.assert_allclose(labels[head].sum(axis=1), 1.0, atol=1e-5)
        expected_means = labels["family"][:, FAMILY_IDS] @ PALETTE
        np.testing.assert_allclose(images.mean(axis=(1, 2)), expected_means, atol=6.0)
        mixed += int((labels["family"].max(axis=1) < 0.99).sum())
    assert mixed > 0


def test_on_device_placement_uses_the_same_layers(cfg):
    cfg = dataclasses.replace(cfg, augment="recipe", backbone="mobilenetv2")
    on_device = dataclasses.replace(cfg, augment_on_device=True)
    front = pipelines.model_front_layers(on_device)
    assert ([type(layer) for layer in front[:-1]]
            == [type(layer) for layer in augmentation.augmentation_layers("recipe", 1.0, cfg.seed)])
    assert [_settings(layer) for layer in front[:-1]] == [
        _settings(layer) for layer in augmentation.augmentation_layers("recipe", 1.0, cfg.seed)]
    assert pipelines.model_front_layers(cfg) == []
    (raw, _), = _batches(on_device, "validation", False, 1)
    (scaled, _), = _batches(cfg, "validation", False, 1)
    inference, training = tf.constant(raw), tf.constant(raw)
    for layer in front:
        inference, training = layer(inference, training=False), layer(training, training=True)
    np.testing.assert_allclose(inference.numpy(), scaled, atol=1e-5)
    assert not np.allclose(training.numpy(), scaled, atol=1e-2)
    (train_images, _), = _batches(on_device, "train", True, 1)
    assert train_images.min() >= 0 and train_images.max() > 1.5


def _settings(layer):
    return {key: value for key, value in layer.get_config().items() if key != "name"}


def test_class_weights_become_training_sample_weights(cfg):
    cfg = dataclasses.replace(cfg, class_weights="balanced")
    weights = balancing.class_weights(pipelines.label_counts(cfg), "balanced")
    for images, labels, sample_weights in _batches(cfg, "train", True, 3):
        np.testing.assert_allclose(sample_weights, [weights[label] for label in labels], rtol=1e-6)
    assert len(_batches(cfg, "validation", False, 1)[0]) == 2


def test_deterministic_runs_repeat_exactly(cfg):
    cfg = dataclasses.replace(cfg, augment="recipe", mixup_alpha=0.4, deterministic=True)
    first, second = _batches(cfg, "train", True, 3), _batches(cfg, "train", True, 3)
    for (images, labels), (again, again_labels) in zip(first, second):
        np.testing.assert_array_equal(images, again)
        np.testing.assert_array_equal(labels, again_labels)


@pytest.mark.parametrize("pipelines_count", [2, 4], ids=["by_file", "by_example"])
def test_input_pipelines_read_disjoint_shards_covering_the_split(cfg, pipelines_count):
    seen_eval, seen_train = [], []
    for index in range(pipelines_count):
        context = tf.distribute.InputContext(pipelines_count, index, pipelines_count)
        names = [name for _, _, batch in _batches(cfg, "validation", False, input_context=context,
                                                  with_file_names=True) for name in batch]
        seen_eval.append(names)
        epoch = sum(COUNTS["train"]) // cfg.batch_size
        seen_train.append({name for _, _, batch in _batches(cfg, "train", True, epoch, input_context=context,
                                                            with_file_names=True) for name in batch})
    flat = [name for names in seen_eval for name in names]
    assert len(flat) == len(set(flat)) == sum(COUNTS["validation"])
    assert sum(len(names) for names in seen_train) == len(set.union(*seen_train)) == sum(COUNTS["train"])


def test_cached_and_uncached_evaluation_agree(cfg):
    cached, uncached = _batches(cfg, "test", False), _batches(dataclasses.replace(cfg, cache_eval=False), "test", False)
    for (images, labels), (other_images, other_labels) in zip(cached, uncached):
        np.testing.assert_array_equal(images, other_images)
        np.testing.assert_array_equal(labels, other_labels)


@pytest.mark.parametrize("fields", [{"augment": "recipe"}, {"augment": "recipe", "augment_on_device": True}],
                         ids=["cpu_recipe", "on_device"])
def test_cached_training_images_shuffle_whole_epochs_and_keep_labels(cfg, fields):
    """With the decoded training images in memory (the stand-in's fit the default budget), every epoch is a
    new permutation of the whole split, its views augmented and labelled as without the cache."""
    cached = dataclasses.replace(cfg, deterministic=True, **fields)
    assert datasets.caches_training_images(cached, "train")
    total = sum(COUNTS["train"])
    batches = _batches(cached, "train", True, 2 * total // cfg.batch_size, with_file_names=True)
    names = [name for _, _, batch in batches for name in batch]
    assert len(set(names[:total])) == len(set(names[total:])) == total and names[:total] != names[total:]
    for images, labels, _ in batches:
        np.testing.assert_array_equal(_nearest_family(images), labels)
    first = [name for _, _, batch in _batches(cached, "train", True, 3, with_file_names=True) for name in batch]
    assert first == names[:len(first)]


def test_training_cache_only_when_the_pipeline_share_fits(cfg):
    train = [image for image in _stored_images(cfg, "train")]
    pixels = sum(image.shape[0] * image.shape[1] for image in train)
    assert reading.stored_pixels(cfg, "train") == pixels
    exact = dataclasses.replace(cfg, train_cache_bytes=3 * pixels)
    assert datasets.caches_training_images(exact, "train")
    assert not datasets.caches_training_images(dataclasses.replace(cfg, train_cache_bytes=3 * pixels - 1), "train")
    half = dataclasses.replace(cfg, train_cache_bytes=3 * pixels // 2 + 1)
    assert not datasets.caches_training_images(half, "train")
    assert datasets.caches_training_images(half, "train", tf.distribute.InputContext(2, 0, 2))


def _stored_images(cfg, split):
    builder = reading.load_builder(cfg)
    return [example["image"] for example in builder.as_dataset(split=split).as_numpy_iterator()]


def test_steps_per_epoch_counts_oversampled_views(cfg):
    assert pipelines.steps_per_epoch(cfg, "train", num_replicas=2) == sum(COUNTS["train"]) // 8
    oversampled = dataclasses.replace(cfg, oversample_labels=("unionidae",), oversample_extra_views=3)
    assert pipelines.steps_per_epoch(oversampled) == (sum(COUNTS["train"]) + 3 * COUNTS["train"][3]) // 4


def test_dataset_info_names_and_phyla(cfg):
    info = pipelines.dataset_info(cfg)
    assert info.full_name == f"{NAME}/{CONFIG}/1.0.0"
    assert info.num_examples == {split: sum(counts) for split, counts in COUNTS.items()}
    assert len(info.names["family"]) == 202 and len(info.names["phylum"]) == 5
    assert labels.phylum_of("family")["unionidae"] == "mollusca" and "mollusca" in info.names["phylum"]


def test_missing_dataset_names_the_build_command(tmp_path):
    cfg = pipelines.InputConfig(data_dir=str(tmp_path), dataset_config="small_128", backbone="baseline_cnn",
                                image_size=32, batch_size=2)
    with pytest.raises(pipelines.DatasetNotBuiltError,
                       match="tfds build rare_species --imports=tfds_rarespecies --config=small_128"):
        pipelines.make_dataset(cfg, "train", training=True)


@pytest.mark.parametrize("fields, message", [
    ({"augment": "heavy"}, "unknown augmentation 'heavy'"),
    ({"class_weights": "inverse"}, "unknown class weighting 'inverse'"),
    ({"sampling_temperature": 2.0}, "sampling_temperature must be in"),
    ({"image_size": 16}, "below baseline_cnn's minimum 32"),
])
def test_config_rejects_bad_values(fields, message):
    with pytest.raises(ValueError, match=message):
        pipelines.InputConfig(**{"data_dir": None, "dataset_config": "small_128", "backbone": "baseline_cnn",
                                 "image_size": 32, "batch_size": 2, **fields})


def test_one_device_strategy_both_paths(cfg):
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    (images, _), = _batches(cfg, "train", True, 1, strategy=strategy)
    assert images.shape[0] == cfg.batch_size
    seen = sum(len(labels) for _, labels in pipelines.distributed_dataset(strategy, cfg, "validation", False))
    assert seen == sum(COUNTS["validation"])


def test_for_backbone_takes_size_and_config_from_the_table():
    cfg = pipelines.InputConfig.for_backbone("inceptionv3", "/data", batch_size=8, augment="light")
    assert (cfg.image_size, cfg.dataset_config, cfg.augment) == (299, "inception_342", "light")
