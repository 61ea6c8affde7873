"""The one backbone table: each input scaling equals Keras' own preprocess_input for that backbone, and its
standard Keras layer (what a saved model scales with) equals it bit for bit."""

import importlib

import keras
import numpy as np
import pytest

from pipelines import backbones
from pipelines.model_front import BackboneScaling

KERAS_ROWS = [row for row in backbones.BACKBONES.values() if row.keras_module]


@pytest.mark.parametrize("row", KERAS_ROWS, ids=lambda row: row.name)
def test_preprocessing_equals_keras_preprocess_input(row):
    images = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3)).astype(np.float32)
    keras_module = importlib.import_module(f"keras.applications.{row.keras_module}")
    expected = keras_module.preprocess_input(images.copy())
    np.testing.assert_allclose(row.preprocess(images).numpy(), expected, atol=1e-4)


@pytest.mark.parametrize("row", backbones.BACKBONES.values(), ids=lambda row: row.name)
def test_scaling_layer_is_keras_rescaling_equal_to_the_table(row):
    """Eager, inside a model under tf.function, and rebuilt from its config as load_model rebuilds it; the layer
    of model.keras files before 2026-12-06 (BackboneScaling) agrees, so old and new files scale alike."""
    pixels = np.random.default_rng(1).uniform(0, 255, (3, 9, 9, 3)).astype(np.float32)
    expected = row.preprocess(pixels).numpy()
    layer = row.scaling_layer()
    assert type(layer) is keras.layers.Rescaling
    images = keras.Input((9, 9, 3))
    model = keras.Model(images, layer(images))
    rebuilt = keras.layers.Rescaling.from_config(layer.get_config())
    for scaled in (layer(pixels), model.predict(pixels, verbose=0), rebuilt(pixels), BackboneScaling(row.name)(pixels)):
        np.testing.assert_array_equal(np.asarray(scaled), expected)


def test_scaling_stays_float32_under_mixed_precision():
    """tf.data scales in float32 before the model casts; the layer must not round the scaled pixels to float16."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = backbones.get_backbone("densenet121").scaling_layer()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    pixels = np.random.default_rng(2).uniform(0, 255, (2, 4, 4, 3)).astype(np.float32)
    scaled = layer(pixels)
    assert scaled.dtype == "float32"
    np.testing.assert_array_equal(np.asarray(scaled), backbones.get_backbone("densenet121").preprocess(pixels))


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


HUB_ROWS = [row for row in backbones.BACKBONES.values() if row.hub]
# The normalisation of each family's Hugging Face image processor, which keras-hub's checkpoint converters copy
# into the preset's image converter (scale = 1 / 255 / std, offset = -mean / std): DINOv2 ImageNet statistics,
# SigLIP 2 mean = std = 0.5.
HUB_NORMALISATION = {"dinov2": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                     "siglip2": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}


@pytest.mark.parametrize("row", HUB_ROWS, ids=lambda row: row.name)
def test_hub_scaling_equals_the_preset_image_converter(row):
    import keras_hub

    mean, std = HUB_NORMALISATION[row.hub.family]
    converter = keras_hub.layers.ImageConverter(scale=[1 / 255 / s for s in std],
                                                offset=[-m / s for m, s in zip(mean, std)])
    images = np.random.default_rng(3).integers(0, 256, (2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(row.preprocess(images).numpy(), np.asarray(converter(images)), atol=1e-5)


@pytest.mark.parametrize("row", HUB_ROWS, ids=lambda row: row.name)
def test_hub_rows_name_a_preset_of_their_keras_hub_class(row):
    import keras_hub

    presets = {"dinov2": keras_hub.models.DINOV2Backbone, "siglip2": keras_hub.models.SigLIPBackbone}
    assert row.hub.preset in presets[row.hub.family].presets
    assert row.input_size % row.hub.patch_size == 0 and row.min_input_size % row.hub.patch_size == 0
    assert row.hub.hidden_dim % row.hub.num_heads == 0
