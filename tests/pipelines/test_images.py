"""pipelines.images: a window read from the JPEG bytes (decoding only it) and from the decoded pixels (what the
training cache holds) is the same window with the same pixels, but on its left and right edge columns, where
libjpeg's cropped decode upsamples the chroma without the neighbour outside the window."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipelines import images


def _photo_jpeg(height: int, width: int) -> bytes:
    """A colourful smooth-plus-noise picture, JPEG-encoded with 4:2:0 chroma like the stored images."""
    rng = np.random.default_rng(0)
    smooth = tf.image.resize(rng.uniform(0, 255, (1, 5, 7, 3)).astype(np.float32), [height, width])[0].numpy()
    pixels = np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90, subsampling=2)
    return buffer.getvalue()


@pytest.mark.parametrize("seed", range(6))
def test_random_crop_window_same_from_bytes_and_pixels(seed):
    jpeg = tf.constant(_photo_jpeg(171, 229))
    key = tf.constant([seed, 7], tf.int64)
    from_bytes = images.random_crop_window(jpeg, key, 0.3).numpy().astype(int)
    from_pixels = images.random_crop_window(images.decode(jpeg), key, 0.3).numpy().astype(int)
    assert from_bytes.shape == from_pixels.shape and from_bytes.shape[2] == 3
    assert from_bytes.shape[0] * from_bytes.shape[1] >= 0.3 * 171 * 229 - 1
    np.testing.assert_array_equal(from_bytes[:, 1:-1], from_pixels[:, 1:-1])
    assert np.abs(from_bytes - from_pixels).max() <= 40


def test_center_window_and_view_same_from_bytes_and_pixels():
    jpeg = tf.constant(_photo_jpeg(120, 200))
    pixels = images.decode(jpeg)
    assert pixels.dtype == tf.uint8 and pixels.shape == (120, 200, 3)
    np.testing.assert_array_equal(images.center_window(pixels), pixels[:, 40:160])
    np.testing.assert_array_equal(images.center_window(jpeg)[:, :-1], pixels[:, 40:159])
    np.testing.assert_array_equal(images.decode_center(pixels, 48), images.resize_square(pixels[:, 40:160], 48))


@pytest.mark.parametrize("height, width, size", [(900, 1200, 128), (333, 517, 64), (1000, 700, 299), (97, 131, 32),
                                                 (2000, 3000, 100), (50, 60, 64)])
def test_a_jpeg_decoded_at_least_a_size_is_what_pillows_draft_decodes(height, width, size):
    """The SavedModel's decoder against predict's (the builder's): same scale, same IDCT, same pixels."""
    from tfds_rarespecies import imaging

    rng = np.random.default_rng(height)
    smooth = np.cumsum(rng.integers(-4, 5, (height, width, 3)), axis=1) % 256
    stream = io.BytesIO()
    Image.fromarray(smooth.astype(np.uint8)).save(stream, "JPEG", quality=90)
    expected = np.asarray(imaging.decode_rgb(stream.getvalue(), min_short_side=size))
    got = images.decode_jpeg_at_least(tf.constant(stream.getvalue()), size).numpy()
    assert got.shape == expected.shape and min(got.shape[:2]) >= min(size, height, width)
    np.testing.assert_array_equal(got, expected)
