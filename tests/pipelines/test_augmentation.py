"""RandomGeometry: the flip, rotation and zoom Keras' own layers apply, as one resampling."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipelines import augmentation


def _smooth_images():
    """Two 60x70 images without hard edges, where interpolating twice or once differ little."""
    noise = np.random.default_rng(0).uniform(0, 255, (2, 6, 7, 3)).astype("float32")
    return tf.image.resize(noise, [60, 70])


def _warp(images, sign_x, sign_y, degrees, zoom):
    count = images.shape[0]
    transforms = augmentation.affine_transforms(
        tf.fill([count], sign_x), tf.fill([count], sign_y), tf.fill([count], math.radians(degrees)),
        tf.fill([count], zoom), images.shape[1], images.shape[2])
    return tf.raw_ops.ImageProjectiveTransformV3(images=images, transforms=transforms,
                                                 output_shape=images.shape[1:3], fill_value=0.0,
                                                 interpolation="BILINEAR", fill_mode="REFLECT").numpy()


@pytest.mark.parametrize("degrees, zoom", [(17.0, 1.0), (-9.0, 1.0), (0.0, 1.08), (0.0, 0.93)])
def test_each_transform_equals_the_keras_layer(degrees, zoom):
    images = _smooth_images()
    layer = (keras.layers.RandomRotation((degrees / 360, degrees / 360)) if zoom == 1.0
             else keras.layers.RandomZoom((zoom - 1, zoom - 1)))
    np.testing.assert_allclose(_warp(images, 1.0, 1.0, degrees, zoom), layer(images, training=True), atol=1e-3)


def test_flips_mirror_exactly():
    images = _smooth_images()
    np.testing.assert_array_equal(_warp(images, -1.0, 1.0, 0.0, 1.0), images.numpy()[:, :, ::-1])
    np.testing.assert_array_equal(_warp(images, 1.0, -1.0, 0.0, 1.0), images.numpy()[:, ::-1])


def test_composition_matches_the_layers_in_sequence():
    images = _smooth_images()
    sequence = images.numpy()[:, ::-1, ::-1]
    sequence = keras.layers.RandomRotation((-13 / 360, -13 / 360))(sequence, training=True)
    sequence = keras.layers.RandomZoom((-0.05, -0.05))(sequence, training=True)
    difference = np.abs(_warp(images, -1.0, -1.0, -13.0, 0.95) - np.asarray(sequence))
    assert difference.mean() < 0.5  # interpolating once instead of twice


def test_layer_draws_per_image_and_is_identity_at_inference():
    images = _smooth_images()
    flips = augmentation.RandomGeometry("horizontal_and_vertical", seed=1)
    outputs = np.concatenate([flips(images, training=True) for _ in range(16)])
    views = {"upright": images.numpy(), "mirrored": images.numpy()[:, :, ::-1],
             "upside_down": images.numpy()[:, ::-1], "rotated": images.numpy()[:, ::-1, ::-1]}
    kinds = [next((name for name, view in views.items() if np.array_equal(out, view[i % 2])), "other")
             for i, out in enumerate(outputs)]
    assert set(kinds) == set(views)  # one coin per axis, unlike Keras 3's RandomFlip("horizontal_and_vertical")
    layer = augmentation.RandomGeometry("horizontal", 20 / 360, 0.1, seed=1)
    first, second = layer(images, training=True), layer(images, training=True)
    assert first.shape == images.shape and first.dtype == tf.float32
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(layer(images, training=False), images)


def test_layer_saves_and_loads_in_a_model(tmp_path):
    model = keras.Sequential([keras.Input((60, 70, 3)), augmentation.RandomGeometry("horizontal", 0.05, 0.1, seed=3)])
    model.save(tmp_path / "front.keras")
    loaded = keras.models.load_model(tmp_path / "front.keras")
    assert loaded.layers[0].get_config() == model.layers[0].get_config()
    images = _smooth_images()
    np.testing.assert_array_equal(loaded(images, training=False), images)


def _settings(layer):
    return {key: value for key, value in layer.get_config().items() if key != "name"}


def test_recipe_layers_match_the_stock_magnitudes():
    stock = {type(layer).__name__: _settings(layer) for layer in augmentation.stock_layers("recipe", 0.5, 7)}
    ours = augmentation.augmentation_layers("recipe", 0.5, 7)
    geometry = ours[0].get_config()
    assert geometry["flip"] == stock["RandomFlip"]["mode"]
    assert (-geometry["rotation"], geometry["rotation"]) == tuple(stock["RandomRotation"]["factor"])
    assert geometry["zoom"] == stock["RandomZoom"]["height_factor"]
    assert [_settings(layer) for layer in ours[1:]] == [stock["RandomBrightness"], stock["RandomContrast"]]
