"""Input throughput at 299 px: is our TFDS pipeline faster than reading the JPEGs, and fast enough to feed a model?

    .venv/bin/python -m benchmarks.input_bench --work_dir=/tmp/rare_species_input_bench --num_images=1000

(a) pipelines.make_dataset: rare_species/inception_342 (stored short side 342), random-resized 299 crops, the
    "recipe" augmentation on the CPU (pipelines.cpu_augmentation, in tf.data), InceptionV3 scaling; tf.data options
    as the trainer gets them (parallel maps, AUTOTUNE, deterministic=False), and its default training cache: the
    decoded stored images stay in memory after the first epoch, so (a) is timed after one epoch, and
    (a, epoch 1) is that first epoch (decoding every image whole, then the whole epoch's views);
(a, no cache) (a) with the cache off (--train_cache_gib=0): each step decodes its crop window from the JPEG;
(b) what earlier projects did: keras.utils.image_dataset_from_directory over the full-size JPEGs of the
    download, resized to 299, then the same recipe as Keras' stock layers (pipelines.augmentation.stock_layers:
    RandomFlip, RandomRotation, RandomZoom, RandomBrightness, RandomContrast) and the same scaling, in a
    parallel map, with prefetch and the same deterministic=False;
(b2) (b)'s reader with our Keras layers (pipelines.augmentation_layers: RandomGeometry's one warp for flip,
    rotation and zoom), the ones the accelerator placement runs;
(c) InceptionV3 (weights=None) training steps on random 299-px batches: the rate the input has to sustain;
(a-dev), (b-dev): the same two readers when augmentation runs on the accelerator (--augment_on_device, the
    placement for GPU machines): what is left on the CPU, (a) without its augmentation layers and scaling (timed
    after its first epoch, like (a)), (b) image_dataset_from_directory alone.

The download is a replica (benchmarks.replica_data: real metadata rows, synthetic JPEGs with sides drawn from
--min_side..--max_side, by default 400..2400 px), written and built once into --work_dir and reused. All six
are timed in alternation for --rounds rounds, so every ratio compares rates measured under the same machine
load; each pipeline gets a fresh iterator per round (so a fresh training cache), warmed up before timing and
dropped after it. Prints one table: images/s (wall) and CPU ms per image of each (this process, all threads),
and the ratios (a)/(b) (also for (a)'s first epoch and without its cache), (a)/(c) and (a-dev)/(b-dev).
"""

import dataclasses
import gc
import os
import pathlib

import keras
import tensorflow as tf
from absl import app, flags

import pipelines
from benchmarks import replica_data, table
from pipelines import augmentation

_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/rare_species_input_bench", "Replica download and built dataset.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 1000, "Images in the replica (about 10 per family).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Batch size of every measurement.")
_BATCHES = flags.DEFINE_integer("batches", 20, "Input batches timed per round and pipeline, after warm-up.")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 3, "InceptionV3 training steps timed per round.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Rounds of alternating measurements; the table sums them.")
_WARMUP = flags.DEFINE_integer("warmup", 5, "Batches run untimed first in every round, so parallelism and "
                               "buffers reach their steady state.")
_MIN_SIDE = flags.DEFINE_integer("min_side", replica_data.FULL_SIZE[0], "Smallest side of the replica's files.")
_MAX_SIDE = flags.DEFINE_integer("max_side", replica_data.FULL_SIZE[1], "Largest side of the replica's files: "
                                 "(b) decodes every pixel of them, so (a)/(b) grows with the download's sizes.")
_AUGMENT = flags.DEFINE_string("augment", "recipe", "Augmentation recipe for (a) and (b).")

SIZE = 299
MODEL_WARMUP = 2  # untimed training steps before the first round: tracing, then one steady step


def from_directory(download: pathlib.Path, cfg: pipelines.InputConfig,
                   layers: list[keras.layers.Layer]) -> tf.data.Dataset:
    """Keras' folder reader, then the augmentation layers and the backbone scaling (both left to the model when
    cfg.augment_on_device), parallel and prefetched."""
    backbone = pipelines.get_backbone(cfg.backbone)

    def augment(images, labels):
        for layer in layers:
            images = layer(images, training=True)
        return (images if cfg.augment_on_device else backbone.preprocess(images)), labels

    folders = keras.utils.image_dataset_from_directory(
        download, image_size=(SIZE, SIZE), batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed, verbose=False)
    options = tf.data.Options()
    options.deterministic = False
    return (folders.repeat().map(augment, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
            .with_options(options))


def inception_steps(batch_size: int):
    """(c): an endless iterator of InceptionV3 training steps (from scratch, SGD) on one random batch."""
    model = keras.applications.InceptionV3(weights=None, input_shape=(SIZE, SIZE, 3), classes=202)
    model.compile("sgd", "sparse_categorical_crossentropy")
    images = tf.random.uniform((batch_size, SIZE, SIZE, 3), -1.0, 1.0)
    labels = tf.random.uniform((batch_size,), 0, 202, dtype=tf.int32)
    while True:
        yield model.train_on_batch(images, labels)


def main(argv):
    del argv
    download, data_dir = replica_data.prepare(pathlib.Path(_WORK_DIR.value), _NUM_IMAGES.value,
                                             _MIN_SIDE.value, _MAX_SIDE.value)
    cfg = pipelines.InputConfig.for_backbone("inceptionv3", str(data_dir), _BATCH_SIZE.value,
                                             augment=_AUGMENT.value)
    stock = augmentation.stock_layers(cfg.augment, cfg.augment_strength, cfg.seed)
    ours = augmentation.augmentation_layers(cfg.augment, cfg.augment_strength, cfg.seed)
    on_device = dataclasses.replace(cfg, augment_on_device=True)
    datasets = {"a": pipelines.make_dataset(cfg, "train", training=True),
                "a_nocache": pipelines.make_dataset(dataclasses.replace(cfg, train_cache_bytes=0), "train",
                                                    training=True),
                "b": from_directory(download, cfg, stock),
                "b2": from_directory(download, cfg, ours),
                "a_dev": pipelines.make_dataset(on_device, "train", training=True),
                "b_dev": from_directory(download, on_device, [])}
    model_steps = inception_steps(cfg.batch_size)
    epoch = pipelines.steps_per_epoch(cfg)
    totals = {name: [0.0, 0.0, 0] for name in (*datasets, "a_epoch1", "c")}  # wall s, CPU s, images
    for round_ in range(_ROUNDS.value):
        print(f"round {round_ + 1}/{_ROUNDS.value} ...", flush=True)
        for name, dataset in datasets.items():
            # A fresh iterator per round, dropped after it: a live one would fill its buffers (and take CPU)
            # while the others are timed, and then serve batches made outside its own timing.
            iterator = iter(dataset)
            if name == "a":
                table.time_batches(iterator, 0, epoch, cfg.batch_size, totals["a_epoch1"])
            warmup = _WARMUP.value + (epoch if name == "a_dev" else 0)  # past the epoch that fills the cache
            table.time_batches(iterator, warmup, _BATCHES.value, cfg.batch_size, totals[name])
            del iterator
            gc.collect()
        table.time_batches(model_steps, MODEL_WARMUP if round_ == 0 else 0, _TRAIN_STEPS.value, cfg.batch_size,
                     totals["c"])
    print(f"\n{replica_data.describe(download)}; batch {cfg.batch_size}, {SIZE} px, augment={cfg.augment}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")
    print(results(totals))


def results(totals: dict) -> str:
    rate = {name: images / wall for name, (wall, _, images) in totals.items()}
    names = {"a": "(a) pipelines.make_dataset (TFDS, stored 342 px)",
             "a_epoch1": "(a, epoch 1) its first epoch, filling the cache",
             "a_nocache": "(a, no cache) decoding each crop every step",
             "b": "(b) image_dataset_from_directory + stock Keras layers",
             "b2": "(b2) image_dataset_from_directory + our Keras layers",
             "a_dev": "(a-dev) (a), augmentation on the accelerator",
             "b_dev": "(b-dev) (b), augmentation on the accelerator",
             "c": "(c) InceptionV3 training steps (random input)"}
    rows = [("measurement", "images/s", "CPU ms/image", "(a)/this")]
    for name, label in names.items():
        wall, cpu, images = totals[name]
        rows.append((label, f"{rate[name]:.1f}", f"{cpu / images * 1000:.1f}", f"{rate['a'] / rate[name]:.2f}"))
    return (table.markdown(rows) + f"\n\n(a)/(b) = {rate['a'] / rate['b']:.2f} (target >= 10; epoch 1: "
            f"{rate['a_epoch1'] / rate['b']:.2f}, no cache: {rate['a_nocache'] / rate['b']:.2f})   "
            f"(a)/(c) = {rate['a'] / rate['c']:.2f} (target >= 20)   "
            f"(a-dev)/(b-dev) = {rate['a_dev'] / rate['b_dev']:.2f}")


if __name__ == "__main__":
    app.run(main)
