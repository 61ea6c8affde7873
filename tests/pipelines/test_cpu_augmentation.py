"""pipelines.cpu_augmentation: the OpenCV path applies the transforms of Keras' layers, drawn from the same
distributions, deterministically per seed, and a script holding a live iterator still exits."""

import math
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipelines import augmentation, backbones, cpu_augmentation

SIZE = 48
UNSCALED = np.array([[1.0] * 3, [0.0] * 3], np.float32)  # slope, offset: 0..255 out
INCEPTION = backbones.get_backbone("inceptionv3")


def _smooth(height: int, width: int) -> np.ndarray:
    """A uint8 image without hard edges, where resampling once or twice differ little."""
    noise = np.random.default_rng(0).uniform(0, 255, (1, 6, 7, 3)).astype("float32")
    return tf.cast(tf.round(tf.image.resize(noise, [height, width])), tf.uint8)[0].numpy()


def _keras_reference(image: np.ndarray, parameters) -> np.ndarray:
    """RandomGeometry's warp, then Keras' RandomBrightness and RandomContrast with the given draws."""
    sign_x, sign_y, angle, zoom, delta, factor = parameters
    batch = tf.cast(image, tf.float32)[None]
    transforms = augmentation.affine_transforms(*(tf.constant([value], tf.float32) for value in
                                                  (sign_x, sign_y, angle, zoom)), SIZE, SIZE)
    batch = tf.raw_ops.ImageProjectiveTransformV3(images=batch, transforms=transforms, output_shape=[SIZE, SIZE],
                                                  fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")
    brightness = keras.layers.RandomBrightness(abs(delta) / 255.0 or 0.1, value_range=augmentation.VALUE_RANGE)
    brightness.factor = (delta / 255.0, delta / 255.0)
    contrast = keras.layers.RandomContrast(abs(factor - 1.0) or 0.1, value_range=augmentation.VALUE_RANGE)
    contrast.factor = (1.0 - factor, factor - 1.0)  # draws exactly `factor`
    return np.asarray(contrast(brightness(batch, training=True), training=True))[0]


PARAMETERS = [(-1.0, 1.0, 0.0, 1.0, 0.0, 1.0), (1.0, -1.0, 0.0, 1.0, 0.0, 1.0),
              (1.0, 1.0, math.radians(17.0), 1.0, 0.0, 1.0), (1.0, 1.0, 0.0, 0.92, 0.0, 1.0),
              (1.0, 1.0, 0.0, 1.09, 0.0, 1.0), (1.0, 1.0, 0.0, 1.0, 38.0, 1.0), (1.0, 1.0, 0.0, 1.0, -45.0, 0.8),
              (-1.0, -1.0, math.radians(-13.0), 1.06, 20.0, 1.18)]


@pytest.mark.parametrize("parameters", PARAMETERS, ids=["mirror", "upside_down", "rotate", "zoom_in", "zoom_out",
                                                        "brighter", "darker_flatter", "all"])
def test_at_the_model_size_it_equals_the_keras_layers(parameters):
    image = _smooth(SIZE, SIZE)
    ours = cpu_augmentation.transform(image, np.array(parameters, np.float32), UNSCALED, SIZE)
    difference = np.abs(ours - _keras_reference(image, parameters))
    assert difference.max() <= 1.0  # the warp rounds to uint8 on OpenCV's 1/32-pixel grid


def test_flips_without_resizing_mirror_exactly():
    image = _smooth(SIZE, SIZE)
    mirrored = cpu_augmentation.transform(image, np.array(PARAMETERS[0], np.float32), UNSCALED, SIZE)
    upside_down = cpu_augmentation.transform(image, np.array(PARAMETERS[1], np.float32), UNSCALED, SIZE)
    np.testing.assert_array_equal(mirrored, image[:, ::-1])
    np.testing.assert_array_equal(upside_down, image[::-1])


@pytest.mark.parametrize("height, width", [(70, 95), (150, 200), (300, 410)],
                         ids=["warp_resizes", "reduced_3x_first", "reduced_6x_first"])
@pytest.mark.parametrize("parameters", PARAMETERS[2:5] + PARAMETERS[-1:], ids=["rotate", "zoom_in", "zoom_out",
                                                                              "all"])
def test_crop_resize_and_geometry_sample_the_right_places(parameters, height, width):
    """A crop of another size and aspect, resampled to SIZE (in the warp, or area-averaged first when it shrinks
    more than 1.5x), against the exact transform of a smooth pattern: output p shows the pattern at
    q = c + A (p - c) of the SIZE x SIZE square (the Keras layers' map), in coordinates normalised to the crop's
    extent, so the crop's own size cannot hide an error."""
    sign_x, sign_y, angle, zoom, _, _ = parameters

    def pattern(u, v):  # u, v in [0, 1] across the crop's width and height
        return 127.5 + 60.0 * np.sin(2.0 * u + 1.0) * np.cos(3.0 * v) + 40.0 * u * v

    rows, columns = np.mgrid[0:height, 0:width]
    crop = np.repeat(np.round(pattern((columns + 0.5) / width, (rows + 0.5) / height))[..., None], 3, axis=2)
    plain = np.array(parameters[:4] + (0.0, 1.0), np.float32)
    ours = cpu_augmentation.transform(crop.astype(np.uint8), plain, UNSCALED, SIZE)[..., 0]
    centre = (SIZE - 1) / 2.0
    out_y, out_x = np.mgrid[0:SIZE, 0:SIZE] - centre
    cos, sin = math.cos(angle) * zoom, math.sin(angle) * zoom
    q_x = centre + sign_x * (cos * out_x - sin * out_y)
    q_y = centre + sign_y * (sin * out_x + cos * out_y)
    inside = (q_x >= 0) & (q_x <= SIZE - 1) & (q_y >= 0) & (q_y <= SIZE - 1)
    exact = pattern((q_x + 0.5) / SIZE, (q_y + 0.5) / SIZE)
    assert inside.mean() > 0.7
    assert np.abs(ours - exact)[inside].max() <= 1.5


def test_a_crop_shrinking_much_is_averaged_not_aliased():
    """One-pixel stripes shrunk ~8x come out an even grey; sampling them with the warp alone would not."""
    stripes = np.zeros((300, 410, 3), np.uint8)
    stripes[:, ::2] = 255
    view = cpu_augmentation.transform(stripes, np.array(PARAMETERS[2], np.float32), UNSCALED, SIZE)
    assert abs(view.mean() - 127.5) < 3.0
    assert view.std() < 6.0


@pytest.mark.parametrize("delta", [0.0, 10.0, 10.4, 254.9, 255.0, 300.0, -0.3, -77.7, -255.0, -300.0])
def test_brightened_means_equal_the_direct_computation(delta):
    image = np.random.default_rng(2).integers(0, 256, (37, 41, 3), dtype=np.uint8)
    np.testing.assert_allclose(cpu_augmentation.brightened_means(image, delta),
                               np.clip(image + delta, 0.0, 255.0).mean(axis=(0, 1)), atol=1e-9)


@pytest.mark.parametrize("name", sorted(backbones.BACKBONES))
def test_the_lookup_table_applies_each_backbone_scaling(name):
    """Every scaling in the table is per-channel affine (else one lookup table could not hold it) and comes out
    as the backbone's own preprocess of the unscaled view."""
    backbone = backbones.get_backbone(name)
    scaling = cpu_augmentation.channel_scaling(backbone)
    levels = np.random.default_rng(1).uniform(0, 255, (50, 3)).astype(np.float32)
    np.testing.assert_allclose(levels * scaling[0] + scaling[1], backbone.preprocess(levels), rtol=1e-5, atol=1e-5)
    image, parameters = _smooth(SIZE, SIZE), np.array(PARAMETERS[-1], np.float32)
    unscaled = cpu_augmentation.transform(image, parameters, UNSCALED, SIZE)
    np.testing.assert_allclose(cpu_augmentation.transform(image, parameters, scaling, SIZE),
                               backbone.preprocess(unscaled), rtol=1e-5, atol=1e-5)


def test_draws_follow_the_recipe_magnitudes():
    size = augmentation.magnitudes("recipe", 0.5)
    draws = np.stack([cpu_augmentation.draw(tf.constant([seed, 7], tf.int64), size).numpy()
                      for seed in range(400)])
    sign_x, sign_y, angle, zoom, delta, factor = draws.T
    assert set(sign_x) == {-1.0, 1.0} and set(sign_y) == {-1.0, 1.0}
    assert 0.3 < np.mean(sign_x < 0) < 0.7 and 0.3 < np.mean(sign_y < 0) < 0.7
    bounds = [(angle, size.rotation * 2 * math.pi), (zoom - 1, size.zoom), (delta, size.brightness * 255),
              (factor - 1, size.contrast)]
    for values, bound in bounds:
        assert np.abs(values).max() <= bound + 1e-6 and np.abs(values).max() > 0.9 * bound
        assert values.min() < -0.5 * bound and values.max() > 0.5 * bound
    horizontal = augmentation.magnitudes("light")
    light = np.stack([cpu_augmentation.draw(tf.constant([seed, 0], tf.int64), horizontal).numpy()
                      for seed in range(40)])
    assert set(light[:, 0]) == {-1.0, 1.0} and set(light[:, 1]) == {1.0}
    assert np.all(light[:, 2] == 0.0) and np.all(light[:, 3] == 1.0)


def test_is_active_only_when_the_recipe_changes_images():
    assert cpu_augmentation.is_active("recipe", 1.0) and cpu_augmentation.is_active("light", 0.3)
    assert not cpu_augmentation.is_active("none", 1.0) and not cpu_augmentation.is_active("recipe", 0.0)


def test_same_seed_same_view_other_seed_other_view():
    jpeg = tf.io.encode_jpeg(_smooth(90, 120))

    def view(seed):
        return cpu_augmentation.augment(jpeg, SIZE, tf.constant([seed, 1], tf.int64), "recipe", 1.0,
                                        INCEPTION).numpy()

    first = view(3)
    assert first.shape == (SIZE, SIZE, 3) and first.dtype == np.float32
    assert -1.0 <= first.min() and first.max() <= 1.0 and first.max() - first.min() > 0.2
    np.testing.assert_array_equal(first, view(3))
    assert not np.array_equal(first, view(4))


EXIT_SCRIPT = textwrap.dedent("""
    import tensorflow as tf
    from pipelines import backbones, cpu_augmentation
    jpeg = tf.io.encode_jpeg(tf.fill([60, 80, 3], tf.constant(90, tf.uint8)))
    views = tf.data.Dataset.from_tensors(jpeg).repeat().enumerate().map(
        lambda index, jpeg: cpu_augmentation.augment(jpeg, 32, tf.stack([index, 0]), "recipe", 1.0,
                                                    backbones.get_backbone("inceptionv3")),
        num_parallel_calls=tf.data.AUTOTUNE).batch(8).prefetch(tf.data.AUTOTUNE)
    iterator = iter(views)  # alive when the interpreter finalises
    for _ in range(20):
        next(iterator)
    print("read", flush=True)
""")


def test_a_script_with_a_live_iterator_exits_cleanly():
    """Without the exit hook about half of these runs hang or abort (tensorflow/tensorflow#21277)."""
    runs = [subprocess.Popen([sys.executable, "-c", EXIT_SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(3)]
    try:
        for run in runs:
            out, err = run.communicate(timeout=120)
            assert (run.returncode, out.strip()) == (0, "read"), err[-2000:]
    finally:
        for run in runs:
            run.kill()  # a hung one must not outlive the test
