"""Pooled embeddings of every example of a split, for the few-shot evaluation: from a run's (fine-tuned)
backbone, or from any registered backbone and weights without a run, so a user's backbone can stand next to
the published few-shot table. Both take the evaluation view's 0..255 images and scale them themselves.
"""

import keras
import numpy as np
import tensorflow as tf
import tqdm

import pipelines
from trainer.training import models


def run_embedder(model: keras.Model) -> keras.Model:
    """A run's saved model cut at its pooled embedding: the front layers (the backbone scaling) and the
    "embedder" sub-model that trainer/training/models.py builds, without the head."""
    embedder = model.get_layer("embedder")
    images = keras.Input(model.input_shape[1:], name="image")
    x = images
    for layer in model.layers[1:model.layers.index(embedder)]:
        x = layer(x)
    return keras.Model(images, embedder(x), name="run_embedder")


def backbone_embedder(backbone: str, weights: str, size: int) -> keras.Model:
    """0..255 images -> the pooled embedding of a registered backbone with the given weights (pretrained,
    imagenet, none, a .weights.h5 path or a keras-hub preset directory), as trainer.main would start from."""
    spec = pipelines.get_backbone(backbone)
    images = keras.Input((size, size, 3), name="image")
    pooled = models.build_embedder(spec, models.build_backbone(spec, size, weights), size)
    return keras.Model(images, pooled(spec.scaling_layer()(images)), name="embedder")


def split_embeddings(embedder: keras.Model, batches: tf.data.Dataset,
                     total: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, label ids) of every (images, labels, file_names) batch, in order."""
    embed = tf.function(lambda images: tf.cast(embedder(images, training=False), tf.float32),
                        reduce_retracing=True)
    rows, ids = [], []
    for images, labels, _ in tqdm.tqdm(batches, total=total, desc="Embedding", unit=" batches", disable=None):
        rows.append(embed(images).numpy())
        ids.append(labels.numpy())
    return np.concatenate(rows), np.concatenate(ids)
