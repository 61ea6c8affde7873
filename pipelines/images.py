"""From the stored JPEG bytes to a square uint8 image of the model's size, decoding only the pixels kept.

`tf.image.decode_and_crop_jpeg` decodes just the crop window, so a random-resized crop of a 342-px image
costs less than decoding it whole. Both paths round to uint8. The central square (evaluation, cached) gets an
antialiased bilinear resize, so a cached evaluation image is bit-identical to a freshly decoded one. A training
crop, resized anew every step, shrinks by at most ~1.5x (the stored short side, aspect 3:4..4:3), where a plain
bilinear resize matches the antialiased one to ~46 dB PSNR (a real photo's crops) at a sixth of the cost
(0.4 instead of 2.4 ms at 299 px, the largest step of decoding a crop); crops that shrink more (the whole image,
when no crop of an elongated one fits the area range) keep the antialiased resize.

The windows themselves (`center_window`, `random_crop_window`) serve pipelines.cpu_augmentation, which resizes
a crop in the same resampling as its flip, rotation and zoom.

Every function takes the stored image either as its JPEG bytes (a tf.string: only the window is decoded) or as
its decoded uint8 pixels (training images cached in memory by pipelines.datasets: the window is sliced). Both
give the same window for the same seed, since the window depends only on the image's shape.
"""

import tensorflow as tf

# libjpeg's accurate integer IDCT: what Pillow decodes with (the builder's decoder, tfds_rarespecies.imaging, and
# so predict's), where TensorFlow's default differs by up to 3 levels; every JPEG reader of the project (these
# pipelines, the SavedModel) decodes with it, so the same file gives the same pixels everywhere.
DCT_METHOD = "INTEGER_ACCURATE"
ASPECT_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)
MAX_PLAIN_SHRINK = 1.5


def decode_center(stored, size: int):
    """The central square (the whole short side), resized: evaluation and un-augmented training."""
    return resize_square(center_window(stored), size)


def decode_random_crop(stored, size: int, seed, min_area: float):
    """An Inception-style random-resized crop: area fraction in [min_area, 1], aspect ratio 3:4..4:3."""
    crop = random_crop_window(stored, seed, min_area)
    shrinks_much = tf.cast(tf.reduce_max(tf.shape(crop)[:2]), tf.float32) > size * MAX_PLAIN_SHRINK
    return tf.cond(shrinks_much, lambda: resize_square(crop, size),
                   lambda: _to_uint8(tf.image.resize(crop, [size, size], method="bilinear")))


def center_window(stored):
    """The decoded central square of the stored image, at its stored resolution."""
    stored = tf.convert_to_tensor(stored)
    shape = _shape(stored)
    side = tf.minimum(shape[0], shape[1])
    return _window(stored, tf.stack([(shape[0] - side) // 2, (shape[1] - side) // 2, side, side]))


def random_crop_window(stored, seed, min_area: float):
    """The decoded window of a random-resized crop (area fraction in [min_area, 1], aspect 3:4..4:3),
    at its stored resolution."""
    stored = tf.convert_to_tensor(stored)
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        _shape(stored), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
        min_object_covered=min_area, aspect_ratio_range=ASPECT_RATIO_RANGE, area_range=(min_area, 1.0),
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    return _window(stored, tf.stack([begin[0], begin[1], extent[0], extent[1]]))


def decode(jpeg):
    """All the stored pixels, uint8 RGB: what pipelines.datasets caches for training."""
    return tf.io.decode_jpeg(jpeg, channels=3, dct_method=DCT_METHOD)


def decode_jpeg_at_least(jpeg, size: int):
    """A JPEG decoded at libjpeg's smallest scale (1/8, 1/4, 1/2 or 1) whose short side stays at least `size`:
    the scale Pillow's draft picks, so the pixels are the ones predict decodes with
    tfds_rarespecies.imaging.decode_rgb(min_short_side=size), and a huge photo stays cheap. The scale is an
    attribute of the decoding op, hence one branch per scale."""
    shape = tf.image.extract_jpeg_shape(jpeg)
    fits = tf.minimum(shape[0], shape[1]) // size
    branch = tf.reduce_sum(tf.cast(fits >= tf.constant([2, 4, 8]), tf.int32))  # 0: whole, 3: 1/8
    return tf.switch_case(branch, [lambda ratio=ratio: tf.io.decode_jpeg(jpeg, channels=3, ratio=ratio,
                                                                         dct_method=DCT_METHOD)
                                   for ratio in (1, 2, 4, 8)])


def _shape(stored):
    return tf.image.extract_jpeg_shape(stored) if stored.dtype == tf.string else tf.shape(stored)


def _window(stored, window):
    """Pixels of window (top, left, height, width): decoded from JPEG bytes, or sliced from decoded pixels."""
    if stored.dtype == tf.string:
        return tf.image.decode_and_crop_jpeg(stored, window, channels=3, dct_method=DCT_METHOD)
    return tf.slice(stored, tf.concat([window[:2], [0]], axis=0), tf.concat([window[2:], [3]], axis=0))


def resize_square(image, size: int):
    """A square image (or batch) to size x size: antialiased bilinear, rounded to uint8. The evaluation view's
    resize, shared with the serving model so a served image matches a stored one bit for bit."""
    return _to_uint8(tf.image.resize(image, [size, size], method="bilinear", antialias=True))


def _to_uint8(image):
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
