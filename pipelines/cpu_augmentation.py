"""The augmentation recipe on the CPU, inside tf.data: each image resampled once, with OpenCV.

Keras' layers (pipelines.augmentation) are the reference and run at the front of the model when augmentation is on
the accelerator. Run inside tf.data they cost ~10 ms an image at 299 px on a CPU core, mostly TF's bilinear warp
(ImageProjectiveTransformV3) and the colour ops: more than reading, decoding and cropping the stored JPEG. Here
TensorFlow decodes the random crop window and draws the parameters per example; then one Python call per example
makes its view: the crop's resize, the flip, the rotation and the zoom are one `cv2.warpAffine` from the decoded
crop window straight to the model's size, and brightness, contrast and the backbone's input scaling one per-channel
lookup table from uint8 to float32 (BUILD-notes.md has the timings). Every scaling in the backbone table is
per-channel affine, so the table holds it exactly; the images come out ready for the model.

The transforms are Keras': the same draws (RandomGeometry's flip coins, angle and zoom, RandomBrightness' delta,
RandomContrast's factor, at the magnitudes of pipelines.augmentation.magnitudes), about the same centre, with the
same reflected border, in the same order. The pixels differ only by resampling once instead of twice and by
rounding the warp to uint8 (tests/pipelines/test_cpu_augmentation.py bounds it). The draws come from TF's stateless
RNG, seeded per element, so a deterministic run repeats exactly.

The Python function inside tf.data has one hazard: an iterator still alive when the interpreter finalises (a
module-level `it = iter(dataset)` in a script) hangs or aborts the exit, because its threads wait for the GIL
(tensorflow/tensorflow#21277). So the first dataset built here registers an exit hook that releases live tf.data
iterators while Python still runs; Keras' fit, evaluate and predict release theirs themselves.
"""

import atexit
import functools
import gc
import math

import cv2
import numpy as np
import tensorflow as tf

from pipelines import augmentation, backbones, images

NUM_DRAWS = 6  # sign_x, sign_y, angle (radians), zoom (above 1 zooms out), brightness delta (0..255), contrast


def is_active(name: str, strength: float) -> bool:
    """True when the recipe at this strength changes training images beyond the central square."""
    size = augmentation.magnitudes(name, strength)
    return (bool(size.flip) or size.rotation > 0 or size.zoom > 0 or size.brightness > 0 or size.contrast > 0
            or augmentation.crop_min_area(name, strength) < 1.0)


def augment(stored, size: int, seed, name: str, strength: float, backbone: backbones.Backbone):
    """A training view of the stored image (JPEG bytes or decoded pixels, see pipelines.images), ready for the
    backbone: random-resized crop, flip, rotation, zoom, brightness, contrast, then the backbone's input scaling.

    Returns a float32 (size, size, 3) tensor; seed is a stateless RNG seed (shape (2,)) for this element.
    """
    cv2.setNumThreads(1)  # tf.data already runs one transform per core; OpenCV's own pool would oversubscribe
    _register_exit_hook()
    min_area = augmentation.crop_min_area(name, strength)
    crop = images.random_crop_window(stored, seed, min_area) if min_area < 1.0 else images.center_window(stored)
    parameters = draw(tf.random.experimental.stateless_fold_in(seed, 1), augmentation.magnitudes(name, strength))
    image = tf.numpy_function(functools.partial(transform, scaling=channel_scaling(backbone), size=size),
                              [crop, parameters], tf.float32, stateful=False)
    image.set_shape([size, size, 3])
    return image


def draw(seed, size: augmentation.Magnitudes):
    """The NUM_DRAWS transform parameters of one image, from the distributions Keras' layers draw from."""
    uniform = tf.random.stateless_uniform([NUM_DRAWS], seed)

    def flip_sign(index: int, axis: str):
        if size.flip not in (axis, "horizontal_and_vertical"):
            return tf.constant(1.0)
        return tf.where(uniform[index] <= 0.5, -1.0, 1.0)

    def symmetric(index: int, magnitude: float):
        return (2.0 * uniform[index] - 1.0) * magnitude

    low, high = augmentation.VALUE_RANGE
    return tf.stack([flip_sign(0, "horizontal"), flip_sign(1, "vertical"),
                     symmetric(2, size.rotation * 2.0 * math.pi), 1.0 + symmetric(3, size.zoom),
                     symmetric(4, size.brightness * (high - low)), 1.0 + symmetric(5, size.contrast)])


def channel_scaling(backbone: backbones.Backbone) -> np.ndarray:
    """(2, 3): the backbone's input scaling as slope and offset per channel (it is affine, see
    tests/pipelines/test_cpu_augmentation.py). Computed eagerly, also while a dataset function is traced."""
    low, high = augmentation.VALUE_RANGE
    with tf.init_scope():
        offset, top = backbone.preprocess(tf.constant([[low] * 3, [high] * 3])).numpy().astype(np.float64)
    slope = (top - offset) / (high - low)
    return np.stack([slope, offset - low * slope])


def transform(crop: np.ndarray, parameters: np.ndarray, scaling: np.ndarray, size: int) -> np.ndarray:
    """The uint8 crop resized to size x size, flipped, rotated and zoomed in one warp; then brightness, contrast
    and the (2, 3) per-channel scaling (slope, offset) in one lookup table to float32.

    A crop that would shrink by more than images.MAX_PLAIN_SHRINK (the bilinear warp alone would alias it) is
    first box-averaged by the smallest whole factor that leaves the warp at most that shrink, as Pillow's
    `reducing_gap` does: a whole factor takes OpenCV's fast area path, ~4x cheaper than area-resizing straight
    to the model's size.
    """
    sign_x, sign_y, angle, zoom, delta, factor = (float(value) for value in parameters)
    matrix = warp_matrix(crop.shape[0], crop.shape[1], size, sign_x, sign_y, angle, zoom)
    reduction = math.ceil(max(crop.shape[:2]) / size / images.MAX_PLAIN_SHRINK)
    if reduction > 1:
        crop = cv2.resize(crop, None, fx=1.0 / reduction, fy=1.0 / reduction, interpolation=cv2.INTER_AREA)
        matrix = reduced_matrix(matrix, reduction)
    # OpenCV's bilinear warp is vectorised for 4 channels, not 3: padding to RGBA gives the same RGB values
    # ~1.7x faster, for two ~10-us conversions.
    warped = cv2.warpAffine(cv2.cvtColor(crop, cv2.COLOR_RGB2RGBA), matrix, (size, size),
                            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
    warped = cv2.cvtColor(warped, cv2.COLOR_RGBA2RGB)
    table = colour_levels(warped, delta, factor) * scaling[0] + scaling[1]
    return cv2.LUT(warped, table.astype(np.float32)[:, None, :])


def warp_matrix(height: int, width: int, size: int, sign_x: float, sign_y: float, angle: float,
                zoom: float) -> np.ndarray:
    """The 2x3 map from an output pixel to its position in the height x width crop.

    At the model's size, output p samples c + A (p - c) (pipelines.augmentation.affine_transforms: A = flip
    signs x rotation x zoom, c the centre); the bilinear resize from the crop maps q there to (q + 0.5) s - 0.5
    in the crop, s = crop side / size (TF's half-pixel centres).
    """
    centre = (size - 1) / 2.0
    cos, sin = math.cos(angle) * zoom, math.sin(angle) * zoom
    linear = np.array([[sign_x * cos, -sign_x * sin], [sign_y * sin, sign_y * cos]])
    scale = np.array([width / size, height / size])
    offset = centre - linear @ np.array([centre, centre]) + 0.5
    return np.hstack([scale[:, None] * linear, (scale * offset - 0.5)[:, None]]).astype(np.float32)


def reduced_matrix(matrix: np.ndarray, reduction: int) -> np.ndarray:
    """The warp matrix for the crop box-averaged by `reduction`: its pixel r averages crop pixels
    r k .. r k + k - 1, so crop position x is (x + 0.5) / k - 0.5 there."""
    reduced = matrix / np.float32(reduction)
    reduced[:, 2] += 0.5 / reduction - 0.5
    return reduced


def colour_levels(image: np.ndarray, delta: float, factor: float) -> np.ndarray:
    """(256, 3): what each uint8 level of each channel becomes, RandomBrightness' clip(v + delta) and then
    RandomContrast's clip((v - mean) * factor + mean), the mean taken over the brightened image."""
    low, high = augmentation.VALUE_RANGE
    brightened = np.clip(np.arange(256.0) + delta, low, high)
    if factor == 1.0:
        return np.repeat(brightened[:, None], 3, axis=1)
    means = brightened_means(image, delta)
    return np.clip((brightened[:, None] - means) * factor + means, low, high)


def brightened_means(image: np.ndarray, delta: float) -> np.ndarray:
    """(3,): the channel means of clip(image + delta, 0, 255), from four vectorised passes instead of a histogram
    per channel (~4x faster).

    For delta >= 0 only the top clips: mean(min(v + delta, 255)) = mean(v) + delta - mean(max(v - t, 0)) with
    t = 255 - delta = k + f (k whole, 0 <= f < 1), and for whole v, max(v - t, 0) = max(v - k, 0) - f [v > k]:
    a saturating subtraction and a threshold. For delta < 0 the same holds for 255 - v and -delta.
    """
    delta = min(delta, 255.0)  # beyond, every level clips to 255 anyway
    if delta < 0:
        return 255.0 - brightened_means(cv2.bitwise_not(image), -delta)
    whole = math.floor(255.0 - delta)
    fraction = 255.0 - delta - whole
    above = cv2.mean(cv2.subtract(image, (whole,) * 4))[:3]
    share_above = cv2.mean(cv2.threshold(image, whole, 1, cv2.THRESH_BINARY)[1])[:3]
    return np.array(cv2.mean(image)[:3]) + delta - (np.array(above) - fraction * np.array(share_above))


@functools.cache
def _register_exit_hook() -> None:
    atexit.register(release_iterators)


def release_iterators() -> None:
    """Drops the resource of every live tf.data iterator (they are unusable afterwards).

    Dropping it is what deleting the iterator does; done at exit, before finalisation, so its threads can
    still take the GIL to finish a call in flight.
    """
    live = [obj for obj in gc.get_objects() if isinstance(obj, tf.data.Iterator) and
            "_iterator_resource" in vars(obj)]
    for iterator in live:
        del iterator._iterator_resource
