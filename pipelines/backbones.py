"""The one table of backbones: constructor (keras.applications or keras-hub), input size, input scaling,
stored-size dataset config, and the flag checks of --weights and --image_size that depend on them.

Every other module (input pipelines, model builder, feature cache, tuner, predict) reads this table, so a
backbone's input scale is written down exactly once. Each `preprocessing` entry reproduces
`keras.applications.<module>.preprocess_input`, or for a keras-hub row the normalisation of its preset's image
converter (tests/pipelines/test_backbones.py checks both), as one affine Scaling, which a model carries as a
plain `keras.layers.Rescaling`.
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
class HubArch:
    """A keras-hub vision transformer: its published preset and the hyperparameters that rebuild it without a
    download (--weights=none). The keras-hub class is a DINOV2Backbone (family "dinov2") or the vision tower
    (SigLIPVisionEncoder) of a SigLIPBackbone (family "siglip2")."""

    family: str
    preset: str
    patch_size: int
    num_layers: int
    hidden_dim: int
    num_heads: int
    intermediate_dim: int


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
      hub: the keras-hub architecture, None for keras.applications rows (and the baseline).
    """

    name: str
    application: str | None
    keras_module: str | None
    input_size: int
    min_input_size: int
    preprocessing: str
    dataset_config: str
    hub: HubArch | None = None

    @property
    def library(self) -> str:
        return "keras_hub" if self.hub else "keras.applications" if self.application else "this project"

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
    Backbone("efficientnetv2b0", "EfficientNetV2B0", "efficientnet_v2", 224, 32, "raw_0_255", "standard_256"),
    Backbone("efficientnetv2b3", "EfficientNetV2B3", "efficientnet_v2", 300, 32, "raw_0_255", "inception_342"),
    # Native 384 and 480 exceed the largest stored size (342): their crops are upsampled; see docs/train.md.
    Backbone("efficientnetv2s", "EfficientNetV2S", "efficientnet_v2", 384, 32, "raw_0_255", "inception_342"),
    Backbone("efficientnetv2m", "EfficientNetV2M", "efficientnet_v2", 480, 32, "raw_0_255", "inception_342"),
    Backbone("convnextsmall", "ConvNeXtSmall", "convnext", 224, 32, "raw_0_255", "standard_256"),
    Backbone("convnextlarge", "ConvNeXtLarge", "convnext", 224, 32, "raw_0_255", "standard_256"),
    # DINOv2 and SigLIP 2 normalise as their Hugging Face image processors (which keras-hub's converters copy):
    # ImageNet mean/std, and (x/255 - 0.5)/0.5. 224 is DINOv2's linear-evaluation size and the SigLIP 2 presets'.
    Backbone("dinov2_small", None, None, 224, 28, "torch", "standard_256",
             HubArch("dinov2", "dinov2_small", 14, 12, 384, 6, 1536)),
    Backbone("dinov2_base", None, None, 224, 28, "torch", "standard_256",
             HubArch("dinov2", "dinov2_base", 14, 12, 768, 12, 3072)),
    Backbone("dinov2_large", None, None, 224, 28, "torch", "standard_256",
             HubArch("dinov2", "dinov2_large", 14, 24, 1024, 16, 4096)),
    Backbone("siglip2_base", None, None, 224, 32, "minus_one_to_one", "standard_256",
             HubArch("siglip2", "siglip2_base_patch16_224", 16, 12, 768, 12, 3072)),
    Backbone("siglip2_so400m", None, None, 224, 28, "minus_one_to_one", "standard_256",
             HubArch("siglip2", "siglip2_so400m_patch14_224", 14, 27, 1152, 16, 4304)),
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
    """Why `weights` cannot initialise the backbone, as the one flag message the trainer and the audit show;
    None when it can. pretrained: the published weights (keras.applications' ImageNet ones, or the keras-hub
    preset's download); imagenet: their old name, kept for the keras.applications rows; none; or a path: a
    weights file of the backbone without top, or (keras-hub rows) a preset directory saved by keras-hub."""
    if weights in ("pretrained", "imagenet") and spec.application is None and spec.hub is None:
        return f"--weights={weights}: {spec.name} has no pretrained weights; use --weights=none or a weights file"
    if weights == "imagenet" and spec.hub:
        return (f"--weights=imagenet: {spec.name}'s published weights are not ImageNet-trained; use "
                "--weights=pretrained (keras-hub preset download), a preset directory, or none")
    if weights in ("pretrained", "imagenet", "none"):
        return None
    path = os.path.expanduser(weights)
    if os.path.isdir(path):
        if not spec.hub:
            return (f"--weights={weights} is a directory: {spec.name} takes a .weights.h5 file without top "
                    "(a keras-hub preset directory is for the dinov2_* and siglip2_* backbones)")
        if not os.path.isfile(os.path.join(path, "config.json")):
            return (f"--weights={weights}: no config.json in the directory, so not a keras-hub preset; save one "
                    f"with keras_hub.models.Backbone.from_preset({spec.hub.preset!r}).save_to_preset(DIR)")
        return None
    if not os.path.isfile(path):
        kind = "a keras-hub preset directory or a .weights.h5" if spec.hub else "a .weights.h5"
        return (f"--weights={weights}: no such file or directory; give {kind} of {spec.name} without top, "
                "or pretrained, or none")
    return None


def size_problem(spec: Backbone, size: int, weights: str) -> str | None:
    """Why --image_size=size cannot feed the backbone (below its minimum, not a whole number of ViT patches,
    or other than the SigLIP tower's fixed position grid with its published weights; a preset directory's grid
    is checked when it is loaded); None when it can."""
    if size < spec.min_input_size:
        return f"--image_size={size} is below {spec.name}'s minimum {spec.min_input_size}: use --image_size>=" \
               f"{spec.min_input_size}"
    if spec.hub and size % spec.hub.patch_size:
        return (f"--image_size={size} is not a multiple of {spec.name}'s patch size {spec.hub.patch_size}: use "
                f"e.g. --image_size={size // spec.hub.patch_size * spec.hub.patch_size or spec.min_input_size}")
    if spec.hub and spec.hub.family == "siglip2" and weights == "pretrained" and size != spec.input_size:
        return (f"--image_size={size} with --weights=pretrained: the {spec.hub.preset} position embeddings are "
                f"learned for {spec.input_size} px and keras-hub does not interpolate them; use --image_size=0 "
                f"({spec.input_size}) or --weights=none")
    return None


def drop_path_problem(spec: Backbone, drop_path: float) -> str | None:
    """Why --drop_path cannot apply: no backbone has working stochastic depth in its library yet. keras-hub
    0.32's DINOV2DropPath takes the batch size at build (None in a functional model: training fails) and
    multiplies by keep + uniform noise instead of dropping; SigLIPVisionEncoder and keras.applications' ConvNeXt
    take no rate (publicly). The flag stays so runs name the rate they train with (0) once one does."""
    if not drop_path:
        return None
    if spec.hub and spec.hub.family == "dinov2":
        return (f"--drop_path={drop_path}: keras-hub 0.32's DINOv2 drop-path layer cannot train in a Keras model "
                "(batch size fixed at build) and does not drop paths; use --drop_path=0 (docs/train.md)")
    return f"--drop_path={drop_path}: {spec.name} has no stochastic depth in its library; use --drop_path=0"
