"""The serving model: photos of any size in, the top-k families with their phyla and probabilities out.

    python -m trainer.serving --model_dir=runs/incv3 [--export_dir=runs/incv3/saved_model] [--top_k=5]

It wraps a run's model.keras (float 0..255 images at the run's input size -> family softmax) with the
evaluation view every validation and test image gets (the central square, antialiased resize, rounded to
uint8; see pipelines.images.decode_center) and with the run's label names. `predict` calls it in memory; the
export writes it as a TF Serving SavedModel whose endpoints are
  serving_default(images: string[batch])             encoded JPEG/PNG/GIF/BMP bytes, one per image;
  classify_images(images: uint8[batch, h, w, 3])      decoded RGB pixels, one size per batch;
both returning families (string), phyla (string) and probabilities (float32), each [batch, top_k], surest
first. A reloaded export answers exactly like the in-memory model. The exported decoder is TensorFlow's: it
ignores EXIF orientation and drops transparency, where `predict` decodes with tfds_rarespecies.imaging.
"""

import dataclasses
import json
import pathlib

import keras
import tensorflow as tf

import pipelines  # noqa: F401  (registers the layers model.keras names)
from pipelines import images as pipeline_images
from tfds_rarespecies import labels
from trainer import cli
from trainer import objectives  # noqa: F401  (registers the loss and metrics a head compiled alone keeps)
from trainer.cli import field
from trainer.run_dir import RunFiles

DEFAULT_TOP_K = 5
EXPORT_DIR_NAME = "saved_model"
ENCODED_SPEC = tf.TensorSpec([None], tf.string, name="images")
PIXELS_SPEC = tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")


class RunNotFoundError(cli.UserError, FileNotFoundError):
    """model_dir holds no finished run; the message is the one line shown to the user."""


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """A run's saved model and the family name of each of its outputs."""

    model: keras.Model
    family_names: tuple[str, ...]

    @property
    def input_size(self) -> int:
        return int(self.model.input_shape[1])

    def family_probabilities(self, images: tf.Tensor) -> tf.Tensor:
        """float32 0..255 images at input_size -> (batch, families) softmax (a phylum head is ignored)."""
        return self.model(images, training=False)["family"]


def load_trained(model_dir: str | pathlib.Path) -> TrainedModel:
    """model.keras and labels.json of a finished run (trainer/run_dir.py), or one RunNotFoundError line."""
    files = RunFiles(pathlib.Path(model_dir).expanduser())
    for path in (files.model, files.labels):
        if not path.is_file():
            raise RunNotFoundError(f"{path} not found: {model_dir} holds no finished run; train one with "
                                   f"`python -m trainer.main --model_dir={model_dir} ...` or fix --model_dir")
    family_names = tuple(json.loads(files.labels.read_text())["family"])
    model = keras.saving.load_model(files.model, compile=False)
    outputs = model.output["family"].shape[-1]
    if outputs != len(family_names):
        raise RunNotFoundError(f"{files.labels}: {len(family_names)} family names for the {outputs} outputs of "
                               f"{files.model}: the two files come from different runs; retrain or restore them")
    return TrainedModel(model, family_names)


def center_square(images: tf.Tensor, size: int) -> tf.Tensor:
    """uint8 (batch, h, w, 3) of any size -> the evaluation view: the central square (the whole short side)
    resized to size x size, antialiased and rounded to uint8 like pipelines.images.decode_center does while
    decoding a stored JPEG (tests/test_predict.py checks they agree bit for bit)."""
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    side = tf.minimum(height, width)
    square = tf.image.crop_to_bounding_box(images, (height - side) // 2, (width - side) // 2, side, side)
    return pipeline_images.resize_square(square, size)


class ServingModel:
    """The two endpoints over one trained model (tf.functions with fixed signatures: no retracing per size)."""

    def __init__(self, trained: TrainedModel, top_k: int = DEFAULT_TOP_K):
        self.trained = trained
        self.top_k = max(1, min(top_k, len(trained.family_names)))
        phylum_of = labels.family_to_phylum()
        self._families = tf.constant(trained.family_names)
        self._phyla = tf.constant([phylum_of[name] for name in trained.family_names])
        self.classify_images = tf.function(self._classify_images, input_signature=[PIXELS_SPEC])
        self.classify_encoded = tf.function(self._classify_encoded, input_signature=[ENCODED_SPEC])

    def _classify_images(self, images):
        return self._top_k(tf.cast(center_square(images, self.trained.input_size), tf.float32))

    def _classify_encoded(self, images):
        size = self.trained.input_size

        def decode(data):
            pixels = tf.io.decode_image(data, channels=3, expand_animations=False)
            return center_square(pixels[None], size)[0]

        views = tf.map_fn(decode, images, fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8))
        return self._top_k(tf.cast(views, tf.float32))

    def _top_k(self, views):
        best = tf.math.top_k(self.trained.family_probabilities(views), k=self.top_k)
        return {"families": tf.gather(self._families, best.indices), "phyla": tf.gather(self._phyla, best.indices),
                "probabilities": best.values}


def export_saved_model(serving: ServingModel, export_dir: str | pathlib.Path) -> pathlib.Path:
    """Writes the SavedModel (serving_default on encoded bytes, classify_images on pixels); returns its path."""
    archive = keras.export.ExportArchive()
    archive.track(serving.trained.model)
    archive.add_endpoint("serving_default", serving.classify_encoded)
    archive.add_endpoint("classify_images", serving.classify_images)
    export_dir = pathlib.Path(export_dir).expanduser()
    archive.write_out(str(export_dir), verbose=False)
    return export_dir


@dataclasses.dataclass(frozen=True)
class ExportSettings:
    """The export command's flags."""

    model_dir: str = field("", "Run directory holding model.keras and labels.json.")
    export_dir: str = field("", f"Where to write the SavedModel; empty = <model_dir>/{EXPORT_DIR_NAME}.")
    top_k: int = field(DEFAULT_TOP_K, "Families returned per image.", lower=1)


def export(settings: ExportSettings) -> pathlib.Path:
    """The whole export command: the run's serving model written as a SavedModel, and what to run next."""
    if not settings.model_dir:
        raise RunNotFoundError("--model_dir is empty: name the run to export, e.g. --model_dir=runs/incv3")
    serving = ServingModel(load_trained(settings.model_dir), settings.top_k)
    path = export_saved_model(serving, settings.export_dir or pathlib.Path(settings.model_dir) / EXPORT_DIR_NAME)
    print(f"SavedModel written to {path}\n"
          f"  serving_default(images: string[batch]) and classify_images(images: uint8[batch, h, w, 3])\n"
          f"  -> families, phyla, probabilities: [batch, {serving.top_k}]\n"
          f"  check: saved_model_cli show --dir {path} --all")
    return path
