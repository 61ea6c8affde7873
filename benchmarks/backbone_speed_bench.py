"""CPU speed of the backbones at their native sizes, side by side in one process: forward images/s (what the
frozen-feature cache and prediction cost), one full training step's images/s (every layer trainable, SGD; what
phase 2 costs), and the feature cache's price in seconds per 100 images (forward only: decoding and the
disk write come on top), each against InceptionV3 at 299 px.

    .venv/bin/python -m benchmarks.backbone_speed_bench
    .venv/bin/python -m benchmarks.backbone_speed_bench --backbones=dinov2_large,siglip2_so400m --batches=2

Random weights (--weights=none builds every architecture without a download; the arithmetic does not depend on
the values), random pixels, float32, the machine's default threads. Each backbone is built, traced on one
untimed batch, then timed on --batches batches; the backbones take turns for --rounds rounds and the table
pools the rounds, so every ratio compares measurements made under the same machine load.
"""

import collections
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from benchmarks import table
from pipelines import backbones
from trainer import cli
from trainer.training import models

SMALLER = ("inceptionv3", "efficientnetv2b0", "efficientnetv2b3", "efficientnetv2s", "convnextsmall",
           "dinov2_small", "dinov2_base", "siglip2_base")
_BACKBONES = flags.DEFINE_list("backbones", list(SMALLER), "Backbones of pipelines/backbones.py to measure; "
                               "inceptionv3 is always added as the yardstick.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Images per batch.")
_BATCHES = flags.DEFINE_integer("batches", 3, "Timed forward batches per backbone and round.")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 2, "Timed training steps per backbone and round; 0 = skip.")
_ROUNDS = flags.DEFINE_integer("rounds", 1, "Rounds over all backbones; the table pools them.")
YARDSTICK = "inceptionv3"


def measure(name: str, batch_size: int, batches: int, train_steps: int) -> dict:
    """Seconds per forward batch and per training step of one backbone at its native size."""
    spec = backbones.get_backbone(name)
    size = spec.input_size
    keras.utils.set_random_seed(0)
    embedder = models.build_embedder(spec, models.build_backbone(spec, size, "none"), size)
    pixels = tf.constant(np.random.default_rng(0).uniform(-1, 1, (batch_size, size, size, 3)), tf.float32)
    forward = tf.function(lambda images: embedder(images, training=False))
    forward(pixels).numpy()
    start = time.perf_counter()
    for _ in range(batches):
        forward(pixels).numpy()
    figures = {"forward": (time.perf_counter() - start) / batches, "params": embedder.count_params(),
               "embedding": embedder.output_shape[-1], "size": size, "library": spec.library, "train": None}
    if train_steps:
        model = keras.Sequential([embedder, keras.layers.Dense(202, activation="softmax")])
        model.compile(keras.optimizers.SGD(1e-3), "sparse_categorical_crossentropy")
        labels = np.zeros(batch_size, np.int32)
        model.train_on_batch(pixels, labels)
        start = time.perf_counter()
        for _ in range(train_steps):
            model.train_on_batch(pixels, labels)
        figures["train"] = (time.perf_counter() - start) / train_steps
    keras.backend.clear_session()
    return figures


def rows(pooled: dict[str, list[dict]], batch_size: int) -> list[tuple[str, ...]]:
    """The table: per backbone its mean figures over the rounds and its forward speed relative to InceptionV3."""
    mean = {name: {key: np.mean([run[key] for run in runs]) if runs[0][key] is not None else None
                   for key in ("forward", "train")} | {key: runs[0][key] for key in ("params", "embedding", "size",
                                                                                       "library")}
            for name, runs in pooled.items()}
    yardstick = batch_size / mean[YARDSTICK]["forward"]
    header = ("backbone", "library", "px", "params (M)", "embedding", "forward img/s", "vs inceptionv3",
              "train-step img/s", "cache s/100 img")
    lines = [header]
    for name, figures in mean.items():
        forward = batch_size / figures["forward"]
        train = f"{batch_size / figures['train']:.2f}" if figures["train"] else "-"
        lines.append((name, figures["library"], str(figures["size"]), f"{figures['params'] / 1e6:.1f}",
                      str(figures["embedding"]), f"{forward:.2f}", f"{forward / yardstick:.2f}x", train,
                      f"{100 / forward:.1f}"))
    return lines


def main(argv):
    del argv
    names = [YARDSTICK, *[name for name in _BACKBONES.value if name != YARDSTICK]]
    for name in names:
        backbones.get_backbone(name)
    pooled = collections.defaultdict(list)
    for _ in range(_ROUNDS.value):
        for name in names:
            pooled[name].append(measure(name, _BATCH.value, _BATCHES.value, _TRAIN_STEPS.value))
            print(f"measured {name}", flush=True)
    print(f"\nbatch {_BATCH.value}, {_BATCHES.value} forward batches and {_TRAIN_STEPS.value} training steps per "
          f"backbone x {_ROUNDS.value} round(s), {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} at the end\n"
          + table.markdown(rows(pooled, _BATCH.value)))


if __name__ == "__main__":
    cli.quiet_native_logs()
    app.run(main)
