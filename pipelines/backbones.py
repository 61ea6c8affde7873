"""The one table of backbones: Keras constructor, input size, input scaling, stored-size dataset config.

Every other module (input pipelines, model builder, feature cache, tuner, predict) reads this table, so a
backbone's input scale is written down exactly once. Each `preprocessing` entry reproduces
`keras.applications.<module>.preprocess_input` (tests/pipelines/test_backbones.py checks it against Keras).
"""

import dataclasses
import os

import tensorflow as tf

# ImageNet statistics used by the "torch" mode of keras.applications.imagenet_utils.
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


def _scale_minus_one_to_one(images):
    return images / 127.5 - 1.0


def _scale_torch(images):
    return (images / 255.0 - tf.constant(_TORCH_MEAN)) / tf.constant(_TORCH_STD)


def _keep_0_255(images):
    """EfficientNet and ConvNeXt rescale inside the model: they take raw 0..255 floats."""
    return images


def _scale_unit(images):
    return images / 255.0


PREPROCESSING = {
    "minus_one_to_one": _scale_minus_one_to_one,
    "torch": _scale_torch,
    "raw_0_255": _keep_0_255,
    "unit": _scale_unit,
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
        return PREPROCESSING[self.preprocessing](tf.cast(images, tf.float32))


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
