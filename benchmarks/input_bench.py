"""Input throughput at 299 px: is our TFDS pipeline faster than reading the JPEGs, and fast enough to feed a model?

    .venv/bin/python benchmarks/input_bench.py --work_dir=/tmp/input_bench --num_images=1000

(a) pipelines.make_dataset: rare_species/inception_342 (stored short side 342), random-resized 299 crops,
    the augmentation recipe, InceptionV3 scaling;
(b) keras.utils.image_dataset_from_directory over the full-size JPEGs of the download, resized to 299, with the
    same augmentation layers and scaling;
(c) InceptionV3 (weights=None) training steps on random 299-px batches: the rate the input has to sustain.

The download is a synthetic replica (real metadata rows, 400..2400-px JPEGs like the real files) written by
tfds_rarespecies.replica into --work_dir and built once; later runs reuse both. Prints one table with
images/s and the ratios (a)/(b) and (a)/(c).
"""

import pathlib
import time

import keras
import pandas as pd
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import app, flags

import pipelines
import tfds_rarespecies
from tfds_rarespecies import replica

_WORK_DIR = flags.DEFINE_string("work_dir", None, "Folder for the replica download and the built dataset.",
                                required=True)
_NUM_IMAGES = flags.DEFINE_integer("num_images", 1000, "Images in the replica: about 10 per family, from up to "
                                   "all 202 families (the split needs at least 3 per family).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Batch size of every measurement.")
_BATCHES = flags.DEFINE_integer("batches", 30, "Input batches timed, after the warm-up.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Batches (or steps) run before timing.")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 5, "InceptionV3 training steps timed, after the warm-up.")
_AUGMENT = flags.DEFINE_string("augment", "recipe", "Augmentation recipe for (a) and (b).")

METADATA = pathlib.Path(__file__).parents[1] / "tests" / "data" / "rare_species_metadata.csv"
SIZE = 299


def prepare(work_dir: pathlib.Path, num_images: int) -> tuple[pathlib.Path, pathlib.Path]:
    """The replica download and the data_dir with rare_species/inception_342 built from it (reused if there)."""
    download, data_dir = work_dir / "download", work_dir / "data"
    if not (download / "metadata.csv").exists():
        metadata = pd.read_csv(METADATA, dtype=str, keep_default_na=False)
        families = max(1, min(202, num_images // 10))
        rows = replica.select_rows(metadata, families=families, per_family=-(-num_images // families))
        replica.write_replica(download, rows, "course")
    builder = tfds_rarespecies.Builder(config="inception_342", data_dir=str(data_dir))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(download)))
    return download, data_dir


def images_per_second(batches, warmup: int, timed: int, batch_size: int) -> float:
    iterator = iter(batches)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(timed):
        next(iterator)
    return timed * batch_size / (time.perf_counter() - start)


def from_directory(download: pathlib.Path, cfg: pipelines.InputConfig) -> tf.data.Dataset:
    """(b): Keras' folder reader, the same augmentation layers and scaling, parallel and prefetched."""
    layers = pipelines.augmentation_layers(cfg.augment, cfg.augment_strength, cfg.seed)
    backbone = pipelines.get_backbone(cfg.backbone)

    def augment(images, labels):
        for layer in layers:
            images = layer(images, training=True)
        return backbone.preprocess(images), labels

    folders = keras.utils.image_dataset_from_directory(
        download, image_size=(SIZE, SIZE), batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed)
    return folders.repeat().map(augment, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def training_rate(batch_size: int, warmup: int, steps: int) -> float:
    """(c): InceptionV3 from scratch, SGD, on random batches (no input cost at all)."""
    model = keras.applications.InceptionV3(weights=None, input_shape=(SIZE, SIZE, 3), classes=202)
    model.compile("sgd", "sparse_categorical_crossentropy")
    images = tf.random.uniform((batch_size, SIZE, SIZE, 3), -1.0, 1.0)
    labels = tf.random.uniform((batch_size,), 0, 202, dtype=tf.int32)

    def train_steps():
        while True:
            yield model.train_on_batch(images, labels)

    return images_per_second(train_steps(), warmup, steps, batch_size)


def main(argv):
    del argv
    download, data_dir = prepare(pathlib.Path(_WORK_DIR.value), _NUM_IMAGES.value)
    cfg = pipelines.InputConfig.for_backbone("inceptionv3", str(data_dir), _BATCH_SIZE.value,
                                             augment=_AUGMENT.value)
    batch = _BATCH_SIZE.value
    ours = images_per_second(pipelines.make_dataset(cfg, "train", training=True), _WARMUP.value, _BATCHES.value,
                             batch)
    folders = images_per_second(from_directory(download, cfg), _WARMUP.value, _BATCHES.value, batch)
    model = training_rate(batch, _WARMUP.value, _TRAIN_STEPS.value)
    print(f"\n{_NUM_IMAGES.value} images, batch {batch}, {SIZE} px, augment={cfg.augment}, "
          f"{len(tf.config.list_physical_devices('CPU'))} CPU device(s), "
          f"{len(tf.config.list_physical_devices('GPU'))} GPU(s)")
    print(f"| {'measurement':<52} | {'images/s':>9} |")
    print(f"| {'-' * 52} | {'-' * 9} |")
    for name, rate in (("(a) pipelines.make_dataset (TFDS, stored 342 px)", ours),
                       ("(b) image_dataset_from_directory (full-size JPEGs)", folders),
                       ("(c) InceptionV3 training steps (random input)", model)):
        print(f"| {name:<52} | {rate:>9.1f} |")
    print(f"\n(a)/(b) = {ours / folders:.2f}   (a)/(c) = {ours / model:.2f}  (>= 1: the input keeps the model busy)")


if __name__ == "__main__":
    app.run(main)
