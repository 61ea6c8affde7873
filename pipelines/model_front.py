"""The layers at the front of the model when augmentation runs on the accelerator ("augment on device").

Then the datasets yield float32 0..255 images and the model itself augments (only while training: Keras'
random layers pass inputs through at inference) and scales them for its backbone, in that order, exactly as
the tf.data placement does. The scaling is the backbone table's standard Keras layer (Backbone.scaling_layer).
"""

import keras

from pipelines import augmentation, backbones
from pipelines.config import InputConfig


@keras.saving.register_keras_serializable(package="rare_species")
class BackboneScaling(keras.layers.Layer):
    """The backbone table's input scaling as a layer of this project: what model.keras files written before
    2026-12-06 hold, kept so they still load (with this module imported). New models use the standard Keras
    layer of Backbone.scaling_layer, which plain Keras loads."""

    def __init__(self, backbone: str, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self._row = backbones.get_backbone(backbone)

    def call(self, images):
        return self._row.preprocess(images)

    def get_config(self):
        return {**super().get_config(), "backbone": self.backbone}


def model_front_layers(cfg: InputConfig) -> list[keras.layers.Layer]:
    """Augmentation then scaling when cfg.augment_on_device; empty when tf.data does both."""
    if not cfg.augment_on_device:
        return []
    return [*augmentation.augmentation_layers(cfg.augment, cfg.augment_strength, cfg.seed),
            backbones.get_backbone(cfg.backbone).scaling_layer()]
