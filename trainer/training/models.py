"""The classifier: [front layers] -> backbone -> pooling -> head, all sharing layer objects.

Parts are models of their own so each phase handles the piece it needs: the head (pooled embedding ->
{rank: softmax} for each head rank) trains alone on cached embeddings in phase 1 (through head_trainer, a
wrapper, so the head inside the serving model is never compiled) and inside the full model in phase 2; the
embedder (scaled images -> embedding) fills the feature cache; the serving model takes float 0..255 images and
scales them itself with the backbone's standard Keras Rescaling layer, so the saved model.keras holds only
Keras' own layers (and, for the dinov2_*/siglip2_* backbones, keras-hub's, which Keras imports by itself when
keras-hub is installed) and no training state: plain `keras.saving.load_model` opens it without this project.
Pooling: global average for the CNNs; DINOv2's class token concatenated with the mean of its patch tokens (the
input of the published linear probes, facebookresearch/dinov2 dinov2/hub/classifiers.py); SigLIP's own
attention-pooling (MAP) head output.
"""

import dataclasses
import os
from collections.abc import Mapping, Sequence

import keras

from pipelines import backbones
from trainer.training.config import Config

# The --weights values naming the published weights (imagenet: the old name, for keras.applications rows).
PUBLISHED = ("pretrained", "imagenet")


@dataclasses.dataclass(frozen=True)
class Classifier:
    """The models built over one set of layers.

    Attributes:
      model: what fit and evaluate see: the datasets' images (scaled for the backbone, or 0..255 through the
        front layers when augmenting on device) -> outputs dict.
      serving: float 0..255 images -> outputs dict, without augmentation; saved as model.keras.
      embedder: scaled images -> pooled backbone embedding (`build_embedder`); feeds the feature cache.
      head: pooled embedding -> outputs dict.
      head_trainer: the head wrapped in a model of its own, which a cached phase 1 compiles and fits: compiling
        the head itself would save its loss and metrics (this project's classes) inside model.keras.
      backbone: the convolutional or transformer base, frozen or partly unfrozen by `set_trainable_backbone`.
    """

    model: keras.Model
    serving: keras.Model
    embedder: keras.Model
    head: keras.Model
    head_trainer: keras.Model
    backbone: keras.Model


def build_classifier(config: Config, front_layers: Sequence[keras.layers.Layer],
                     num_classes: Mapping[str, int]) -> Classifier:
    """front_layers: pipelines.model_front_layers (augmentation + scaling on device), or none; num_classes:
    names per rank, for every rank of config.head_ranks."""
    spec = config.backbone_spec
    size = config.input_size
    backbone = build_backbone(spec, size, config.weights)
    # Pretrained BatchNormalization statistics must survive fine-tuning on ~10k images: keep BN in inference
    # mode. A randomly initialised backbone has no statistics to protect, so its BN trains normally; the
    # transformers have no BN (and their dropout, when a preset has any, should train).
    embedder = build_embedder(spec, backbone, size, training=False if config.pretrained and not spec.hub else None)
    embedding_size = embedder.output_shape[-1]
    head = build_head(config, embedding_size, num_classes)

    def classifier(layers, name):
        images = keras.Input((size, size, 3), name="image")
        x = images
        for layer in layers:
            x = layer(x)
        return keras.Model(images, head(embedder(x)), name=name)

    embedding = keras.Input((embedding_size,), name="embedding")
    return Classifier(model=classifier(front_layers, f"{spec.name}_classifier"),
                      serving=classifier([spec.scaling_layer()], f"{spec.name}_{config.label_rank}_classifier"),
                      embedder=embedder, head=head, head_trainer=keras.Model(embedding, head(embedding),
                                                                             name="head_trainer"),
                      backbone=backbone)


def build_backbone(spec: backbones.Backbone, size: int, weights: str) -> keras.Model:
    """The base without top; weights is pretrained (imagenet: its alias for keras.applications), none, a
    weights file path, or a keras-hub preset directory."""
    problem = backbones.size_problem(spec, size, weights)
    if problem:
        raise ValueError(problem)
    if spec.hub:
        backbone = _hub_backbone(spec, size, weights)
    elif spec.application is None:
        backbone = baseline_cnn(size)
    else:
        constructor = getattr(keras.applications, spec.application)
        backbone = constructor(include_top=False, weights="imagenet" if weights in PUBLISHED else None,
                               input_shape=(size, size, 3), pooling=None)
    if weights not in (*PUBLISHED, "none") and not os.path.isdir(os.path.expanduser(weights)):
        backbone.load_weights(os.path.expanduser(weights))
    return backbone


def _hub_backbone(spec: backbones.Backbone, size: int, weights: str) -> keras.Model:
    """A keras-hub DINOv2 or SigLIP vision tower: from its preset (downloaded, or a saved directory), else built
    from the table's hyperparameters with random weights. keras_hub is imported here only (~5 s)."""
    import keras_hub  # noqa: PLC0415 (heavy; only the dinov2_*/siglip2_* rows need it)

    arch = spec.hub
    dinov2 = {"image_shape": (size, size, 3)} if arch.family == "dinov2" else {}
    if weights == "pretrained" or os.path.isdir(os.path.expanduser(weights)):
        source = arch.preset if weights == "pretrained" else os.path.expanduser(weights)
        loaded = keras_hub.models.Backbone.from_preset(source, **dinov2)
        backbone = getattr(loaded, "vision_encoder", loaded)  # a SigLIPBackbone preset holds the text tower too
        _check_preset(spec, backbone, size)
        return backbone
    hyper = {"patch_size": arch.patch_size, "num_layers": arch.num_layers, "hidden_dim": arch.hidden_dim,
             "num_heads": arch.num_heads, "intermediate_dim": arch.intermediate_dim}
    if arch.family == "siglip2":
        return keras_hub.models.SigLIPVisionEncoder(**hyper, image_shape=(size, size, 3))
    # Published DINOv2 geometry: positions learned for 518 px and interpolated to `size`.
    return keras_hub.models.DINOV2Backbone(**hyper, **dinov2, position_embedding_shape=(518, 518, 3))


def _check_preset(spec: backbones.Backbone, backbone: keras.Model, size: int) -> None:
    """Refuses a preset of another family or size than the --backbone row (its weights would not fit the
    table's hyperparameters that --weights=none builds), or a SigLIP tower built for another image side."""
    arch = spec.hub
    expected = {"DINOV2Backbone": "dinov2", "SigLIPVisionEncoder": "siglip2"}.get(type(backbone).__name__)
    shape = (getattr(backbone, "patch_size", None), getattr(backbone, "num_layers", None),
             getattr(backbone, "hidden_dim", None))
    if expected != arch.family or shape != (arch.patch_size, arch.num_layers, arch.hidden_dim):
        raise ValueError(f"the preset holds a {type(backbone).__name__} (patch, layers, width {shape}), not "
                         f"{spec.name} ({arch.family}, {(arch.patch_size, arch.num_layers, arch.hidden_dim)}): "
                         "pass the --backbone of that preset")
    if arch.family == "siglip2" and tuple(backbone.image_shape)[:2] != (size, size):
        raise ValueError(f"the preset's SigLIP tower takes {backbone.image_shape[0]} px images, not {size}: use "
                         f"--image_size={backbone.image_shape[0]}")


def build_embedder(spec: backbones.Backbone, backbone: keras.Model, size: int, training: bool | None = False
                   ) -> keras.Model:
    """Scaled images -> one embedding per image, named "embedder" (the feature cache, few-shot evaluation and
    the audit read it). training: what the backbone is called with (False keeps pretrained BN statistics)."""
    scaled = keras.Input((size, size, 3), name="scaled_image")
    features = backbone({"images": scaled} if spec.hub else scaled, training=training)
    if spec.hub is None:
        pooled = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    elif spec.hub.family == "siglip2":
        pooled = features
    else:
        tokens, patches = features.shape[1], (size // spec.hub.patch_size) ** 2
        # Plain Keras layers, so model.keras loads without this project: crop the class token, and the patch
        # tokens after the class (and any register) tokens.
        cls = keras.layers.Flatten(name="cls_token")(
            keras.layers.Cropping1D((0, tokens - 1), name="cls_crop")(features))
        mean = keras.layers.GlobalAveragePooling1D(name="patch_mean")(
            keras.layers.Cropping1D((tokens - patches, 0), name="patch_crop")(features))
        pooled = keras.layers.Concatenate(name="pool")([cls, mean])
    return keras.Model(scaled, pooled, name="embedder")


def baseline_cnn(size: int, widths: tuple[int, ...] = (32, 64, 128, 256)) -> keras.Model:
    """Conv-BN-ReLU-MaxPool blocks trained from scratch: the yardstick transfer learning must beat.

    BatchNormalization's moving statistics follow the batches faster than Keras' default (momentum 0.9, not
    0.99): a from-scratch model is evaluated after a few hundred steps, when 0.99 has not yet forgotten its
    initial statistics.
    """
    inputs = keras.Input((size, size, 3))
    x = inputs
    for block, width in enumerate(widths, start=1):
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"block{block}_conv")(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn")(x)
        x = keras.layers.ReLU(name=f"block{block}_relu")(x)
        x = keras.layers.MaxPooling2D(name=f"block{block}_pool")(x)
    return keras.Model(inputs, x, name="baseline_cnn")


def build_head(config: Config, embedding_size: int, num_classes: Mapping[str, int]) -> keras.Model:
    """Dropout -> Dense(ReLU, L2) -> Dropout -> one softmax per rank of config.head_ranks, each named by its
    rank, on that shared embedding. Softmaxes are float32 so mixed precision cannot overflow the loss."""
    embedding = keras.Input((embedding_size,), name="embedding")
    x = keras.layers.Dropout(config.pool_dropout, name="pool_dropout")(embedding)
    if config.dense_units:
        x = keras.layers.Dense(config.dense_units, activation="relu", name="dense",
                               kernel_regularizer=keras.regularizers.L2(config.l2))(x)
        x = keras.layers.Dropout(config.dense_dropout, name="dense_dropout")(x)
    outputs = {rank: keras.layers.Dense(num_classes[rank], activation="softmax", dtype="float32", name=rank)(x)
               for rank in config.head_ranks}
    return keras.Model(embedding, outputs, name="head")


def set_trainable_backbone(classifier: Classifier, layers: int, keep_batchnorm_frozen: bool) -> None:
    """Trains the last `layers` backbone layers (-1: all, 0: none); the head always trains.

    BatchNormalization layers stay frozen when keep_batchnorm_frozen: their moving statistics come from
    ImageNet and their scale/offset are tuned to them.
    """
    backbone = classifier.backbone
    backbone.trainable = layers != 0
    units = backbone_units(backbone)
    first = 0 if layers < 0 else len(units) - layers
    for index, layer in enumerate(units):
        is_batchnorm = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = index >= first and not (is_batchnorm and keep_batchnorm_frozen)
    classifier.head.trainable = True


def backbone_units(backbone: keras.Model) -> list[keras.layers.Layer]:
    """The backbone's layers bottom to top, with a layer that holds a list of blocks (keras-hub's DINOv2
    encoder holds all its transformer blocks) counted block by block: what --unfreeze_layers counts."""
    units = []
    for layer in backbone.layers:
        blocks = getattr(layer, "layers", None)
        units.extend(blocks if isinstance(blocks, list) and not isinstance(layer, keras.Model) else [layer])
    return units
