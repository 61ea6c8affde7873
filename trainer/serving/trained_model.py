"""A run's trained model in memory (TrainedModel: model.keras, its label names and its taxonomy) and the
evaluation view every photo gets before it (center_square).

load_trained reads a run's model.keras (float 0..255 images at the run's input size -> a softmax per head; only
Keras' own layers, so plain `keras.saving.load_model` opens it too), labels.json, whose first head is the rank
the model names (its label rank: family for runs before any rank could be trained, whose labels.json lists
family then phylum), and taxonomy.tsv; a missing, damaged or unsafe file is one line. predict, evaluate
(through predictors), the SavedModel (savedmodel.py) and the LiteRT export (litert_export.py) all start from it.
"""

import dataclasses
import functools
import json
import pathlib
import zipfile
from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf

# model.keras files written before 2026-12-06 name this project's classes: pipelines' BackboneScaling, and the
# loss and metrics their head kept from phase 1 (objectives); importing the modules registers them.
import pipelines  # noqa: F401
from pipelines import images as pipeline_images
from tfds_rarespecies import labels
from trainer import cli
from trainer.training import objectives  # noqa: F401
from trainer.training.run_dir import RunFiles

DEFAULT_TOP_K = 5


class RunNotFoundError(cli.UserError, FileNotFoundError):
    """model_dir holds no finished run; the message is the one line shown to the user."""


class ModelFileError(cli.UserError):
    """A run's model.keras or labels.json is there but cannot be used; the one line says which and what to do."""


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """A run's saved model, the label names of each of its heads (labels.json's order: the label rank first),
    the file it was read from and the taxonomy it was trained in (taxonomy.tsv)."""

    model: keras.Model
    label_names: Mapping[str, tuple[str, ...]]
    taxonomy: labels.Taxonomy
    source: str = "model.keras"

    @property
    def label_rank(self) -> str:
        """The rank the model names: labels.json's first head."""
        return next(iter(self.label_names))

    @property
    def names(self) -> tuple[str, ...]:
        """The label rank's names; label id i is names[i]."""
        return self.label_names[self.label_rank]

    @property
    def input_size(self) -> int:
        return int(self.model.input_shape[1])

    def probabilities(self, images) -> dict[str, np.ndarray]:
        """0..255 images (uint8 or float, (batch, input_size, input_size, 3)) -> each head's softmax rows: the
        interface trainer.serving.predictors gives every backend."""
        return {head: rows.numpy() for head, rows in self._heads(tf.cast(images, tf.float32)).items()}

    @functools.cached_property
    def _heads(self):
        spec = tf.TensorSpec([None, self.input_size, self.input_size, 3], tf.float32)
        return tf.function(lambda images: self.model(images, training=False), input_signature=[spec])

    @functools.cached_property
    def pixels_function(self):
        """uint8 pixels [batch, input_size, input_size, 3] -> every head's softmax: the graph a LiteRT export
        converts, so the exported model takes the pixels a phone's camera gives and scales them itself."""
        spec = tf.TensorSpec([None, self.input_size, self.input_size, 3], tf.uint8, name="images")
        return tf.function(lambda images: self.model(tf.cast(images, tf.float32), training=False),
                           input_signature=[spec])


def load_trained(model_dir: str | pathlib.Path) -> TrainedModel:
    """model.keras and labels.json of a finished run (trainer/training/run_dir.py); one RunNotFoundError line when they
    are missing, one ModelFileError line when they cannot be read or do not belong together."""
    files = RunFiles(pathlib.Path(model_dir).expanduser())
    for path in (files.model, files.labels):
        if not path.is_file():
            raise RunNotFoundError(f"{path} not found: {model_dir} holds no finished run; train one with "
                                   f"`python -m trainer.main --model_dir={model_dir} ...` or fix --model_dir")
    names = _read_label_names(files.labels, model_dir)
    model = _load_model(files.model, model_dir)
    different = "the two files come from different runs; retrain or restore them"
    if set(names) != set(model.output):
        raise ModelFileError(f"{files.labels} names the heads {', '.join(names) or 'none'} but {files.model} has "
                             f"{', '.join(model.output)}: {different}")
    for head, output in model.output.items():
        if len(names[head]) != output.shape[-1]:
            raise ModelFileError(f"{files.labels}: {len(names[head])} {head} names for the {output.shape[-1]} "
                                 f"{head} outputs of {files.model}: {different}")
    return TrainedModel(model, {head: tuple(head_names) for head, head_names in names.items()},
                        read_taxonomy(files, model_dir), str(files.model))


def read_taxonomy(files: RunFiles, model_dir) -> labels.Taxonomy:
    """The run's taxonomy.tsv; a run without one was trained before runs kept it, on the shipped tree."""
    if not files.taxonomy.is_file():
        return labels.shipped()
    try:
        return labels.Taxonomy.from_text(files.taxonomy.read_text())
    except (OSError, ValueError) as error:
        raise ModelFileError(f"{files.taxonomy}: not the run's taxonomy ({str(error).splitlines()[0]}); retrain "
                             f"with `python -m trainer.main --model_dir={model_dir} ...` or restore the file"
                             ) from None


def _read_label_names(path: pathlib.Path, model_dir) -> dict[str, list[str]]:
    try:
        return dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as error:
        raise ModelFileError(f"{path}: not the run's label names ({error}); retrain with `python -m trainer.main "
                             f"--model_dir={model_dir} ...` or restore the file") from None


def _load_model(path: pathlib.Path, model_dir) -> keras.Model:
    """keras.saving.load_model, with its failures as one line: Keras reports any unreadable archive as "File not
    found" (wrong when the file is there) and a layer its safe mode refuses (a Lambda's Python code would run
    while loading) as a long ValueError; damaged archives raise still other types, hence the broad except."""
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001 (every failure of a damaged archive becomes the same one line)
        retrain = f"retrain with `python -m trainer.main --model_dir={model_dir} ...`"
        if "safe_mode" in str(error):
            raise ModelFileError(f"{path}: Keras' safe mode refuses to load it (it holds a Lambda layer or other "
                                 f"Python code that would run on loading); {retrain}, or re-export the model "
                                 "without Lambda layers") from None
        reason = ("not a .keras zip archive: damaged, or another format" if not zipfile.is_zipfile(path)
                  else f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no detail'}")
        raise ModelFileError(f"{path}: not a readable Keras model ({reason}); {retrain}, or restore the file "
                             "from a backup") from None


def center_square(images: tf.Tensor, size: int) -> tf.Tensor:
    """uint8 (batch, h, w, 3) of any size -> the evaluation view: the central square (the whole short side)
    resized to size x size, antialiased and rounded to uint8 like pipelines.images.decode_center does while
    decoding a stored JPEG (tests/evaluation/test_predict.py checks they agree bit for bit)."""
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    side = tf.minimum(height, width)
    square = tf.image.crop_to_bounding_box(images, (height - side) // 2, (width - side) // 2, side, side)
    return pipeline_images.resize_square(square, size)
