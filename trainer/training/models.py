"""The classifier: [front layers] -> backbone -> global average pooling -> head, all sharing layer objects.

Parts are models of their own so each phase handles the piece it needs: the head (pooled embedding ->
{rank: softmax} for each head rank) trains alone on cached embeddings in phase 1 (through head_trainer, a
wrapper, so the head inside the serving model is never compiled) and inside the full model in phase 2; the
embedder (scaled images -> embedding) fills the feature cache; the serving model takes float 0..255 images and
scales them itself with the backbone's standard Keras Rescaling layer, so the saved model.keras holds only
Keras' own layers and no training state: plain `keras.saving.load_model` opens it without this project.
"""

import dataclasses
import os
from collections.abc import Mapping, Sequence

import keras

from pipelines import backbones
from trainer.training.config import Config


@dataclasses.dataclass(frozen=True)
class Classifier:
    """The models built over one set of layers.

    Attributes:
      model: what fit and evaluate see: the datasets' images (scaled for the backbone, or 0..255 through the
        front layers when augmenting on device) -> outputs dict.
      serving: float 0..255 images -> outputs dict, without augmentation; saved as model.keras.
      embedder: scaled images -> pooled backbone embedding; feeds the feature cache.
      head: pooled embedding -> outputs dict.
      head_trainer: the head wrapped in a model of its own, which a cached phase 1 compiles and fits: compiling
        the head itself would save its loss and metrics (this project's classes) inside model.keras.
      backbone: the convolutional base, frozen or partly unfrozen by `set_trainable_backbone`.
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
    head = build_head(config, backbone.output_shape[-1], num_classes)
    scaled = keras.Input((size, size, 3), name="scaled_image")
    # Pretrained BatchNormalization statistics must survive fine-tuning on ~10k images: keep BN in inference
    # mode. A randomly initialised backbone has no statistics to protect, so its BN trains normally.
    features = backbone(scaled, training=False if config.pretrained else None)
    embedder = keras.Model(scaled, keras.layers.GlobalAveragePooling2D(name="pool")(features), name="embedder")

    def classifier(layers, name):
        images = keras.Input((size, size, 3), name="image")
        x = images
        for layer in layers:
            x = layer(x)
        return keras.Model(images, head(embedder(x)), name=name)

    embedding = keras.Input((backbone.output_shape[-1],), name="embedding")
    return Classifier(model=classifier(front_layers, f"{spec.name}_classifier"),
                      serving=classifier([spec.scaling_layer()], f"{spec.name}_{config.label_rank}_classifier"),
                      embedder=embedder, head=head, head_trainer=keras.Model(embedding, head(embedding),
                                                                             name="head_trainer"),
                      backbone=backbone)


def build_backbone(spec: backbones.Backbone, size: int, weights: str) -> keras.Model:
    """The convolutional base without top; weights is imagenet, none, or a weights file path."""
    if spec.application is None:
        backbone = baseline_cnn(size)
    else:
        constructor = getattr(keras.applications, spec.application)
        backbone = constructor(include_top=False, weights="imagenet" if weights == "imagenet" else None,
                               input_shape=(size, size, 3), pooling=None)
    if weights not in ("imagenet", "none"):
        backbone.load_weights(os.path.expanduser(weights))
    return backbone


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
    first = 0 if layers < 0 else len(backbone.layers) - layers
    for index, layer in enumerate(backbone.layers):
        is_batchnorm = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = index >= first and not (is_batchnorm and keep_batchnorm_frozen)
    classifier.head.trainable = True
