"""The one table of backbones: Keras constructor, input size, input scaling, stored-size dataset config.

Every other module (input pipelines, model builder, feature cache, tuner, predict) reads this table, so a
backbone's input scale is written down exactly once. Each `preprocessing` entry reproduces
`keras.applications.<module>.preprocess_input` (tests/pipelines/test_backbones.py checks it against Keras) as
one affine Scaling, which a model carries as a plain `keras.layers.Rescaling`.
"""

import dataclasses
import os

import keras
import tensorflow as tf

# ImageNet statistics used by the "torch" mode of keras.applications.imagenet_utils.
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class Scaling:
    """An input scaling `images * scale + offset` (per channel when tuples): every backbone's is affine, so the
    saved model can do it with Keras' own Rescaling layer and load without this project."""

    scale: float | tuple[float, ...]
    offset: float | tuple[float, ...] = 0.0

    def __call__(self, images):
        return tf.cast(images, tf.float32) * tf.constant(self.scale, tf.float32) + tf.constant(self.offset,
                                                                                                 tf.float32)

    def layer(self, name: str = "scaling") -> keras.layers.Layer:
        """The same arithmetic as a standard Keras layer (cast, multiply, add: the same float32 results; float32
        under mixed precision too, as tf.data scales before the model casts)."""
        return keras.layers.Rescaling(self.scale, self.offset, name=name, dtype="float32")


PREPROCESSING = {
    "minus_one_to_one": Scaling(1 / 127.5, -1.0),
    # (x / 255 - mean) / std, folded into one multiply and one add.
    "torch": Scaling(tuple(1 / (255 * std) for std in _TORCH_STD),
                     tuple(-mean / std for mean, std in zip(_TORCH_MEAN, _TORCH_STD))),
    # EfficientNet and ConvNeXt rescale inside the model: they take raw 0..255 floats.
    "raw_0_255": Scaling(1.0),
    "unit": Scaling(1 / 255),
}


@dataclasses.dataclass(frozen=True)
class Backbone:
    """How to build one backbone and feed it.

    Attributes:
      name: the value of --backbone.
      application: attribute of `keras.applications`, or None for the from-scratch baseline CNN.
      keras_module: submodule of `keras.applications` whose `preprocess_input` `preprocessing` reproduces.
      input_size: the side of the square input the backbone was trained at.
      min_input_size: the smallest side Keras accepts (tests and the CPU demo use it).
      preprocessing: key of PREPROCESSING, applied to float32 images in 0..255.
      dataset_config: the `rare_species` builder config whose stored size leaves room for random crops.
    """

    name: str
    application: str | None
    keras_module: str | None
    input_size: int
    min_input_size: int
    preprocessing: str
    dataset_config: str

    def preprocess(self, images):
        """float32 0..255 images -> what the backbone expects."""
        return PREPROCESSING[self.preprocessing](images)

    def scaling_layer(self) -> keras.layers.Layer:
        """preprocess as a standard Keras layer: what a saved model scales its 0..255 inputs with."""
        return PREPROCESSING[self.preprocessing].layer()


_ROWS = [
    Backbone("inceptionv3", "InceptionV3", "inception_v3", 299, 75, "minus_one_to_one", "inception_342"),
    Backbone("xception", "Xception", "xception", 299, 71, "minus_one_to_one", "inception_342"),
    Backbone("inceptionresnetv2", "InceptionResNetV2", "inception_resnet_v2", 299, 75, "minus_one_to_one",
             "inception_342"),
    Backbone("resnet50v2", "ResNet50V2", "resnet_v2", 224, 32, "minus_one_to_one", "standard_256"),
    Backbone("mobilenetv2", "MobileNetV2", "mobilenet_v2", 224, 32, "minus_one_to_one", "standard_256"),
    Backbone("densenet121", "DenseNet121", "densenet", 224, 32, "torch", "standard_256"),
    Backbone("efficientnetb0", "EfficientNetB0", "efficientnet", 224, 32, "raw_0_255", "standard_256"),
    Backbone("efficientnetb1", "EfficientNetB1", "efficientnet", 240, 32, "raw_0_255", "standard_256"),
    Backbone("efficientnetb2", "EfficientNetB2", "efficientnet", 260, 32, "raw_0_255", "inception_342"),
    Backbone("efficientnetb3", "EfficientNetB3", "efficientnet", 300, 32, "raw_0_255", "inception_342"),
    Backbone("convnexttiny", "ConvNeXtTiny", "convnext", 224, 32, "raw_0_255", "standard_256"),
    Backbone("convnextbase", "ConvNeXtBase", "convnext", 224, 32, "raw_0_255", "standard_256"),
    Backbone("baseline_cnn", None, None, 128, 32, "unit", "small_128"),
]

BACKBONES = {row.name: row for row in _ROWS}


def get_backbone(name: str) -> Backbone:
    """Looks a backbone up by name, with an error that lists the choices."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(
            f"unknown backbone {name!r}: choose one of {', '.join(sorted(BACKBONES))}") from None


def weights_problem(spec: Backbone, weights: str) -> str | None:
    """Why `weights` (imagenet, none, or a weights file) cannot initialise the backbone, as the one flag
    message the trainer and the audit show; None when it can."""
    if weights == "imagenet" and spec.application is None:
        return f"--weights=imagenet: {spec.name} has no pretrained weights; use --weights=none or a weights file"
    if weights not in ("imagenet", "none") and not os.path.isfile(os.path.expanduser(weights)):
        return (f"--weights={weights}: no such file; give a .weights.h5 of {spec.name} without top, or imagenet, "
                "or none")
    return None
