"""Named augmentation recipes as one list of Keras preprocessing layers, used by both placements.

The same `augmentation_layers` list runs either inside tf.data on the CPU (pipelines.datasets) or at the front
of the model on the accelerator (pipelines.model_front), so switching placement never changes the transforms.
Keras' random layers are inactive at inference, and evaluation datasets never call them.

Layers work on float32 images in 0..255 (brightness and contrast clip to that range), so per-backbone scaling
always comes after them. The random-resized crop is not a layer: it happens while decoding the JPEG
(pipelines.images), with the minimum kept area given here per recipe.
"""

import dataclasses

import keras


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


def check_name(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown augmentation {name!r}: choose one of {', '.join(RECIPES)}") from None


def augmentation_layers(name: str, strength: float = 1.0, seed: int = 0) -> list[keras.layers.Layer]:
    """Fresh Keras layers for the named recipe with every magnitude scaled by strength (empty for "none")."""
    recipe = check_name(name)
    rotation = min(recipe.rotation_degrees * strength / 360.0, 0.5)
    zoom = min(recipe.zoom * strength, 0.9)
    brightness = min(recipe.brightness * strength, 1.0)
    contrast = min(recipe.contrast * strength, 1.0)
    layers = []
    if recipe.flip and strength > 0:
        layers.append(keras.layers.RandomFlip(recipe.flip, seed=seed))
    if rotation > 0:
        layers.append(keras.layers.RandomRotation(rotation, seed=seed + 1))
    if zoom > 0:
        layers.append(keras.layers.RandomZoom(zoom, seed=seed + 2))
    if brightness > 0:
        layers.append(keras.layers.RandomBrightness(brightness, value_range=VALUE_RANGE, seed=seed + 3))
    if contrast > 0:
        layers.append(keras.layers.RandomContrast(contrast, value_range=VALUE_RANGE, seed=seed + 4))
    return layers


def crop_min_area(name: str, strength: float = 1.0) -> float:
    """Smallest area fraction the training crop keeps; strength scales the part it may cut away."""
    cut = (1.0 - check_name(name).crop_min_area) * strength
    return min(1.0, max(0.08, 1.0 - cut))
