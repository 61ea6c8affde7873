"""Named augmentation recipes: their magnitudes, and the Keras preprocessing layers that apply them.

The layers run at the front of the model when augmentation is on the accelerator (pipelines.model_front). On the
CPU, inside tf.data, pipelines.cpu_augmentation applies the same transforms with the same draws (magnitudes from
`magnitudes` here) in one OpenCV resampling, checked against these layers by its tests. Keras' random layers
are inactive at inference, and evaluation datasets never augment.

Layers work on float32 images in 0..255 (brightness and contrast clip to that range), so per-backbone scaling
always comes after them. The random-resized crop is not a layer: it happens while decoding the JPEG
(pipelines.images), with the minimum kept area given here per recipe.

Flip, rotation and zoom are one layer, `RandomGeometry`: the transforms Keras' RandomFlip, RandomRotation and
RandomZoom draw, applied as one resampling instead of three (on the CPU, 3 instead of 7 ms an image at
299 px: the three layers were 60% of the whole input pipeline). `stock_layers` gives the recipe as those
three Keras layers, as earlier projects ran it (benchmarks/input_bench.py compares against them).
"""

import dataclasses
import math

import keras
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Magnitudes at strength 1.

    Attributes:
      flip: keras.layers.RandomFlip mode, or "" for none.
      rotation_degrees: maximum rotation either way.
      zoom: maximum zoom in or out, as a fraction of the side.
      brightness, contrast: maximum change, as a fraction.
      crop_min_area: smallest fraction of the stored image a random-resized crop keeps (1 = no crop).
    """

    flip: str = ""
    rotation_degrees: float = 0.0
    zoom: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    crop_min_area: float = 1.0


RECIPES = {
    "none": Recipe(),
    "light": Recipe(flip="horizontal", brightness=0.1, contrast=0.1, crop_min_area=0.7),
    # The best earlier project's recipe, plus the random-resized crop the stored sizes leave room for.
    "recipe": Recipe(flip="horizontal_and_vertical", rotation_degrees=20.0, zoom=0.1, brightness=0.2,
                     contrast=0.2, crop_min_area=0.5),
}

VALUE_RANGE = (0.0, 255.0)
FLIP_MODES = ("", "horizontal", "vertical", "horizontal_and_vertical")


def check_name(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown augmentation {name!r}: choose one of {', '.join(RECIPES)}") from None


@dataclasses.dataclass(frozen=True)
class Magnitudes:
    """A recipe at a strength, in the units of Keras' layers: rotation as a fraction of a full turn, zoom,
    brightness and contrast as fractions (of the side, of the value range, of the contrast)."""

    flip: str
    rotation: float
    zoom: float
    brightness: float
    contrast: float


def magnitudes(name: str, strength: float = 1.0) -> Magnitudes:
    """The named recipe with every magnitude scaled by strength (and capped where Keras requires)."""
    recipe = check_name(name)
    return Magnitudes(flip=recipe.flip if strength > 0 else "",
                      rotation=min(recipe.rotation_degrees * strength / 360.0, 0.5),
                      zoom=min(recipe.zoom * strength, 0.9),
                      brightness=min(recipe.brightness * strength, 1.0),
                      contrast=min(recipe.contrast * strength, 1.0))


def augmentation_layers(name: str, strength: float = 1.0, seed: int = 0) -> list[keras.layers.Layer]:
    """Fresh Keras layers for the named recipe with every magnitude scaled by strength (empty for "none")."""
    size = magnitudes(name, strength)
    layers = []
    if size.rotation > 0 or size.zoom > 0:
        layers.append(RandomGeometry(size.flip, size.rotation, size.zoom, seed=seed))
    elif size.flip:
        layers.append(keras.layers.RandomFlip(size.flip, seed=seed))
    return layers + _colour_layers(size, seed)


def stock_layers(name: str, strength: float = 1.0, seed: int = 0) -> list[keras.layers.Layer]:
    """The same recipe as Keras' own layers, one per transform (RandomGeometry's reference; slower on CPU)."""
    size = magnitudes(name, strength)
    layers = []
    if size.flip:
        layers.append(keras.layers.RandomFlip(size.flip, seed=seed))
    if size.rotation > 0:
        layers.append(keras.layers.RandomRotation(size.rotation, seed=seed + 1))
    if size.zoom > 0:
        layers.append(keras.layers.RandomZoom(size.zoom, seed=seed + 2))
    return layers + _colour_layers(size, seed)


def _colour_layers(size: Magnitudes, seed: int) -> list[keras.layers.Layer]:
    layers = []
    if size.brightness > 0:
        layers.append(keras.layers.RandomBrightness(size.brightness, value_range=VALUE_RANGE, seed=seed + 3))
    if size.contrast > 0:
        layers.append(keras.layers.RandomContrast(size.contrast, value_range=VALUE_RANGE, seed=seed + 4))
    return layers


@keras.saving.register_keras_serializable(package="rare_species")
class RandomGeometry(keras.layers.Layer):
    """Keras' RandomFlip(flip), RandomRotation(rotation) and RandomZoom(zoom), in that order, as one resampling.

    Per image it draws what those layers draw, except for "horizontal_and_vertical": an independent coin per
    axis, so all four orientations occur (Keras 3's RandomFlip uses one coin for both axes, which only ever
    turns an image by 180 degrees and never mirrors it); an angle uniform in +-rotation turns; one zoom factor
    uniform in 1 +- zoom for both axes (above 1 zooms out). The three maps, all about the image centre, are composed
    into one affine transform and applied with bilinear interpolation and "reflect" fill like theirs; so the
    pixels differ from the three layers' only by interpolating once instead of twice, and at the reflected
    borders. Inactive (identity) unless training.
    """

    def __init__(self, flip: str = "", rotation: float = 0.0, zoom: float = 0.0, seed: int | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        if flip not in FLIP_MODES:
            raise ValueError(f"unknown flip mode {flip!r}: choose one of {FLIP_MODES}")
        self.flip, self.rotation, self.zoom, self.seed = flip, float(rotation), float(zoom), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        images = tf.cast(images, self.compute_dtype)
        if not training:
            return images
        batched = images.shape.rank == 4
        batch = images if batched else images[None]
        count = tf.shape(batch)[0]
        height, width = tf.shape(batch)[1], tf.shape(batch)[2]

        def uniform(low, high):
            return keras.random.uniform([count], low, high, seed=self.seed_generator)

        def flip_sign(axis: str):
            if self.flip not in (axis, "horizontal_and_vertical"):
                return tf.ones([count])
            return tf.where(uniform(0.0, 1.0) <= 0.5, -1.0, 1.0)

        sign_x, sign_y = flip_sign("horizontal"), flip_sign("vertical")
        angle = uniform(-self.rotation, self.rotation) * 2.0 * math.pi
        zoom = uniform(1.0 - self.zoom, 1.0 + self.zoom)
        warped = tf.raw_ops.ImageProjectiveTransformV3(
            images=batch, transforms=affine_transforms(sign_x, sign_y, angle, zoom, height, width),
            output_shape=tf.shape(batch)[1:3], fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")
        return warped if batched else warped[0]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "flip": self.flip, "rotation": self.rotation, "zoom": self.zoom,
                "seed": self.seed}


def affine_transforms(sign_x, sign_y, angle, zoom, height, width):
    """(N, 8) ImageProjectiveTransform rows for N images of height x width: a flip (sign -1 mirrors that axis),
    then a rotation by angle (radians), then a zoom (above 1 zooms out), as RandomFlip, RandomRotation and
    RandomZoom apply them one after another.

    Each layer maps its output pixel to an input position, so output p samples the input at F(R(Z(p))); all
    three act about the centre c = ((width - 1) / 2, (height - 1) / 2), as in Keras, so that is
    c + S Rot zoom (p - c), S = diag(sign_x, sign_y).
    """
    cos, sin = tf.cos(angle) * zoom, tf.sin(angle) * zoom
    a0, a1, b0, b1 = sign_x * cos, -sign_x * sin, sign_y * sin, sign_y * cos
    cx, cy = (tf.cast(width, tf.float32) - 1.0) / 2.0, (tf.cast(height, tf.float32) - 1.0) / 2.0
    zeros = tf.zeros_like(a0)
    return tf.stack([a0, a1, cx - a0 * cx - a1 * cy, b0, b1, cy - b0 * cx - b1 * cy, zeros, zeros], axis=1)


def crop_min_area(name: str, strength: float = 1.0) -> float:
    """Smallest area fraction the training crop keeps; strength scales the part it may cut away."""
    cut = (1.0 - check_name(name).crop_min_area) * strength
    return min(1.0, max(0.08, 1.0 - cut))
