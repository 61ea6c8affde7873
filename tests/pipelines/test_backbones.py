"""The one backbone table: each input scaling equals Keras' own preprocess_input for that backbone."""

import importlib

import keras
import numpy as np
import pytest

from pipelines import backbones

KERAS_ROWS = [row for row in backbones.BACKBONES.values() if row.keras_module]


@pytest.mark.parametrize("row", KERAS_ROWS, ids=lambda row: row.name)
def test_preprocessing_equals_keras_preprocess_input(row):
    images = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3)).astype(np.float32)
    keras_module = importlib.import_module(f"keras.applications.{row.keras_module}")
    expected = keras_module.preprocess_input(images.copy())
    np.testing.assert_allclose(row.preprocess(images).numpy(), expected, atol=1e-4)


@pytest.mark.parametrize("row", KERAS_ROWS, ids=lambda row: row.name)
def test_application_exists_and_accepts_its_sizes(row):
    assert callable(getattr(keras.applications, row.application))
    assert row.min_input_size <= row.input_size


def test_baseline_scales_to_unit_range():
    row = backbones.get_backbone("baseline_cnn")
    np.testing.assert_allclose(row.preprocess(np.array([0.0, 255.0])).numpy(), [0.0, 1.0])


def test_unknown_backbone_lists_the_choices():
    with pytest.raises(ValueError, match="unknown backbone 'resnet': choose one of baseline_cnn, convnextbase"):
        backbones.get_backbone("resnet")
