"""The run's TensorBoard record (`tensorboard --logdir <model_dir>/tensorboard`, or a tuning study's folder to
compare its trials): one step axis for every phase, the flags as hparams, and pictures.

- Scalars: tensorboard/train and tensorboard/validation, at the run's epoch counted across phases. Keras'
  TensorBoard callback restarts its steps at every fit (every phase) and writes validation metrics at epoch and
  at optimizer-iteration steps into one folder, which is why it is not used.
- HParams: every flag at the start of a run, and the final validation metrics (`final/...` scalars) at its end,
  so the HParams dashboard lists runs, or a study's trials, side by side (the plugin infers the table).
- Images: a grid of augmented training inputs (as the model sees them, scaled back to pixels), the confusion
  matrix of the validation split by phylum, and the worst classes' mistakes.
"""

import dataclasses
import io
import pathlib
from collections.abc import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api

import pipelines
from trainer.figures import pages
from trainer.numbers import metrics
from trainer.training import console, inputs
from trainer.training.config import Config

GRID_IMAGES = 16
WORST_CLASSES = 4
MISTAKES_PER_CLASS = 3


class EpochScalars(keras.callbacks.Callback):
    """Each epoch's logs at step first_step + epoch + 1: `val_` metrics under validation/, the rest (loss,
    metrics, learning rate, input wait) under train/, with the same tag so TensorBoard overlays the two."""

    def __init__(self, directory: pathlib.Path, first_step: int):
        super().__init__()
        self.directory, self.first_step, self.writers = directory, first_step, {}

    def on_train_begin(self, logs=None):
        self.writers = {split: tf.summary.create_file_writer(str(self.directory / split))
                        for split in ("train", "validation")}

    def on_epoch_end(self, epoch, logs=None):
        rate = console.learning_rate(self.model)
        for key, value in {**(logs or {}), **({} if rate is None else {"learning_rate": rate})}.items():
            split, tag = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            with self.writers[split].as_default(step=self.first_step + epoch + 1):
                tf.summary.scalar(tag, float(value))
        for writer in self.writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        for writer in self.writers.values():
            writer.close()


def hparam_values(config: Config) -> dict[str, bool | int | float | str]:
    """Every flag as a value the hparams plugin takes (a list as its comma-joined text)."""
    return {name: ",".join(map(str, value)) if isinstance(value, (tuple, list)) else value
            for name, value in dataclasses.asdict(config).items()}


def write_hparams(directory: pathlib.Path, config: Config) -> None:
    """The run's session start: its flags, under the run directory's name as the trial id."""
    writer = tf.summary.create_file_writer(str(directory))
    with writer.as_default():
        hparams_api.hparams(hparam_values(config), trial_id=pathlib.Path(config.model_dir).name)
    writer.close()


def write_final_metrics(directory: pathlib.Path, results: Mapping, step: int) -> None:
    """The metrics the HParams table shows: the best validation macro-F1 and the best checkpoint's validation
    metrics (never test: a study's trials do not read it)."""
    values = {"final/best_val_macro_f1": results.get("best_val_macro_f1")}
    values.update({f"final/validation_{name}": value for name, value in results.get("validation", {}).items()})
    writer = tf.summary.create_file_writer(str(directory))
    with writer.as_default(step=step):
        for tag, value in values.items():
            if value is not None:
                tf.summary.scalar(tag, float(value))
    writer.close()


def write_images(directory: pathlib.Path, images: Mapping[str, bytes], step: int) -> None:
    """PNG files as TensorBoard images, each under its tag."""
    writer = tf.summary.create_file_writer(str(directory))
    with writer.as_default(step=step):
        for tag, png in images.items():
            tf.summary.image(tag, tf.image.decode_png(png, channels=3)[tf.newaxis])
    writer.close()


def png_of(draw) -> bytes:
    """What draw(file) saves, as PNG bytes (pages' plots save to a path or a file object alike)."""
    buffer = io.BytesIO()
    draw(buffer)
    return buffer.getvalue()


def augmented_grid(config: Config, names: Sequence[str]) -> bytes:
    """A contact sheet of one training batch after the run's augmentation (MixUp/CutMix included), each image
    captioned with its (strongest) label: what the model is fed, back in pixels."""
    cfg = dataclasses.replace(inputs.input_config(config), augment_on_device=True, batch_size=GRID_IMAGES,
                              class_weights="none", heads=(), train_cache_bytes=0)
    images, labels = next(iter(pipelines.make_dataset(cfg, config.train_split, training=True).take(1)))[:2]
    for layer in pipelines.augmentation_layers(cfg.augment, cfg.augment_strength, cfg.seed):
        images = layer(images, training=True)
    ids = np.asarray(labels).argmax(axis=-1) if cfg.soft_labels else np.asarray(labels).reshape(-1)
    pixels = np.clip(np.asarray(images), 0, 255).astype(np.uint8)
    return png_of(lambda file: pages.contact_sheet(
        [pages.thumbnail(image) for image in pixels], [names[i] for i in ids], ["black"] * len(ids), file,
        f"augmented training inputs ({config.augment}, MixUp {config.mixup_alpha}, CutMix {config.cutmix_alpha})",
        "no training images"))


def phylum_confusion(labels: np.ndarray, probabilities: np.ndarray, names: Sequence[str],
                     phylum_of: Mapping[str, str], split: str) -> bytes:
    """The confusion matrix of a split's predictions at the label rank, rolled up to phyla."""
    phyla = sorted(set(phylum_of.values()))
    to_phylum = np.array([phyla.index(phylum_of[name]) for name in names])
    confusion = metrics.confusion_counts(to_phylum[labels], to_phylum[probabilities.argmax(axis=1)], len(phyla))
    return png_of(lambda file: pages.plot_confusion_matrix(
        confusion, phyla, {phylum: phylum for phylum in phyla}, file, f"{split} by phylum", rank="phylum"))


def worst_mistakes(config: Config, labels: np.ndarray, probabilities: np.ndarray, names: Sequence[str]) -> bytes:
    """The validation images of the WORST_CLASSES labels with the lowest F1 that the model named wrongly, each
    captioned with its truth and the answer given."""
    predictions = probabilities.argmax(axis=1)
    f1, support = metrics.per_class_f1(labels, predictions, len(names))
    worst = [label for label in np.argsort(f1, kind="stable") if support[label]][:WORST_CLASSES]
    wanted = [int(index) for label in worst
              for index in np.flatnonzero((labels == label) & (predictions != label))[:MISTAKES_PER_CLASS]]
    pictures = _split_images(config, config.validation_split, set(wanted))
    captions = [f"{names[labels[i]]} (F1 {f1[labels[i]]:.2f})\nsaid {names[predictions[i]]} "
                f"{probabilities[i, predictions[i]]:.2f}" for i in wanted]
    return png_of(lambda file: pages.contact_sheet(
        [pages.thumbnail(pictures[i]) for i in wanted], captions, ["tab:red"] * len(wanted), file,
        f"mistakes of the {len(worst)} {config.label_rank} names with the lowest validation F1",
        "no mistakes"))


def _split_images(config: Config, split: str, indices: set[int]) -> dict[int, np.ndarray]:
    """The split's images at these positions, in the evaluation view's order (the order the predictions were
    made in), as uint8 pixels; reading stops after the last one wanted."""
    found, position = {}, 0
    if not indices:
        return found
    for images, _ in pipelines.make_dataset(inputs.evaluation_view(inputs.input_config(config)), split,
                                            training=False):
        for image in np.asarray(images):
            if position in indices:
                found[position] = np.clip(image, 0, 255).astype(np.uint8)
            position += 1
        if position > max(indices):
            break
    return found
