"""The TF Serving SavedModel over a run's trained model: photos of any size in, the top-k names at the model's
label rank with their phyla and probabilities out.

    python -m trainer.export --model_dir=runs/incv3 [--export_dir=runs/incv3/saved_model] [--top_k=5]

ServingModel wraps a TrainedModel with the evaluation view every validation and test image gets (the central
square, antialiased resize, rounded to uint8: trained_model.center_square) and with the run's label names;
export_saved_model writes it (export.py is the command) with the endpoints
  serving_default(images: string[batch])             encoded JPEG/PNG/GIF/BMP bytes, one per image;
  classify_images(images: uint8[batch, h, w, 3])      decoded RGB pixels, one size per batch;
both returning names (string: the label rank's, e.g. families or species), phyla (string) and probabilities
(float32), each [batch, top_k], surest first, from the label rank's own head; the export command adds the
tree-consistent answer and the roll-up predict gives, computed in the graph (savedmodel_rollup.py). A reloaded
export answers exactly like the in-memory model. The exported decoder is TensorFlow's, at the scale and with the
IDCT Pillow uses (pipelines.images.decode_jpeg_at_least), so a JPEG gives the pixels predict decodes
(tfds_rarespecies.imaging); unlike predict it ignores EXIF orientation and drops transparency.
"""

import pathlib

import keras
import tensorflow as tf

from pipelines import images as pipeline_images
from trainer.serving.trained_model import DEFAULT_TOP_K, TrainedModel, center_square

ENCODED_SPEC = tf.TensorSpec([None], tf.string, name="images")
PIXELS_SPEC = tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")


class ServingModel:
    """The two endpoints over one trained model (tf.functions with fixed signatures: no retracing per size)."""

    def __init__(self, trained: TrainedModel, top_k: int = DEFAULT_TOP_K, more_outputs=None):
        """more_outputs: {head: softmax rows} -> more outputs per image (the export's consistent answer and
        roll-up, serving_rollup.TreeOutputs), or None for the top-k alone."""
        self.trained = trained
        self.top_k = max(1, min(top_k, len(trained.names)))
        self.more_outputs = more_outputs
        phylum_of = trained.taxonomy.phylum_of(trained.label_rank)
        self._names = tf.constant(trained.names)
        self._phyla = tf.constant([phylum_of[name] for name in trained.names])
        self.classify_images = tf.function(self._classify_images, input_signature=[PIXELS_SPEC])
        self.classify_encoded = tf.function(self._classify_encoded, input_signature=[ENCODED_SPEC])

    def _classify_images(self, images):
        return self._top_k(tf.cast(center_square(images, self.trained.input_size), tf.float32))

    def _classify_encoded(self, images):
        size = self.trained.input_size

        def decode(data):
            pixels = tf.cond(tf.io.is_jpeg(data), lambda: pipeline_images.decode_jpeg_at_least(data, size),
                             lambda: tf.io.decode_image(data, channels=3, expand_animations=False))
            return center_square(pixels[None], size)[0]

        views = tf.map_fn(decode, images, fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8))
        return self._top_k(tf.cast(views, tf.float32))

    def _top_k(self, views):
        heads = self.trained.model(views, training=False)
        best = tf.math.top_k(heads[self.trained.label_rank], k=self.top_k)
        return {"names": tf.gather(self._names, best.indices), "phyla": tf.gather(self._phyla, best.indices),
                "probabilities": best.values, **(self.more_outputs(heads) if self.more_outputs else {})}


def export_saved_model(serving: ServingModel, export_dir: str | pathlib.Path) -> pathlib.Path:
    """Writes the SavedModel (serving_default on encoded bytes, classify_images on pixels); returns its path."""
    archive = keras.export.ExportArchive()
    archive.track(serving.trained.model)
    archive.add_endpoint("serving_default", serving.classify_encoded)
    archive.add_endpoint("classify_images", serving.classify_images)
    export_dir = pathlib.Path(export_dir).expanduser()
    archive.write_out(str(export_dir), verbose=False)
    return export_dir
