"""The LiteRT export of a run, `python -m trainer.export --format=litert --quantize=float32|float16|int8`:
model_dir/litert/<quantize>.tflite and its metadata <quantize>.json (trainer/serving/litert.py describes
both), kept only when it agrees with the Keras model on the validation split.

Conversion. TFLiteConverter.from_keras_model fails on Keras 3 models (keras-team/keras#19108); the working path
is a SavedModel written by Keras' own exporter (keras.export.ExportArchive, what model.export(path,
"tf_saved_model") runs), here with one endpoint, TrainedModel.pixels_function: uint8 pixels in, so the cast and
the backbone's input scaling are inside the .tflite, and every head's softmax out. Then from_saved_model:
- float32: the graph as is.
- float16: weights stored as float16 (half the bytes), computed in float32.
- int8: full-integer post-training quantisation, weights and activations (TFLITE_BUILTINS_INT8 only, so a
  model that cannot be fully quantised fails instead of silently keeping float ops), calibrated on
  --calibration_images images of the train split (a seeded sample, in the evaluation view) and never on
  validation or test, which judge it. The input stays uint8 pixels and the outputs float32 probabilities.

Parity. The Keras model and the converted one predict the validation split through split_predictions.predict_split (the
view and batches trainer.evaluate uses): top-1 agreement, the macro-F1 of each against the labels, and the
largest absolute difference of a probability of the label rank's head. Under --min_agreement (negative = FLOORS of the
quantisation; 0 keeps any export) the export fails in one line and nothing is written; otherwise the figures
go into the metadata.
"""

import dataclasses
import datetime
import json
import os
import pathlib
import tempfile

import keras
import numpy as np
import tensorflow as tf

import pipelines
from trainer import cli
from trainer.numbers import metrics
from trainer.serving import litert, split_predictions, trained_model

FLOORS = {"float32": 0.99, "float16": 0.99, "int8": 0.97}
CALIBRATION_SPLIT = "train"
PARITY_SPLIT = "validation"
DEFAULT_CALIBRATION_IMAGES = 500


class ParityError(cli.UserError):
    """The converted model disagrees with the Keras model more than allowed; nothing was written."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """How to convert and judge one export (the export command's flags of the same names)."""

    quantize: str = "float32"
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES
    calibration_seed: int = 0
    min_agreement: float = -1.0
    threads: int = 0

    @property
    def floor(self) -> float:
        return FLOORS[self.quantize] if self.min_agreement < 0 else self.min_agreement


def export(trained: trained_model.TrainedModel, model_dir: str, target: litert.LiteRTFiles, plan: Plan,
           tree: dict, data_dir: str = "", batch_size: int = 32) -> dict:
    """Converts, measures parity, and writes target's two files only when agreement reaches the floor;
    returns the metadata written (tree: the tree and roll-up the export command describes,
    serving_rollup.TreeOutputs.metadata). Raises ParityError (nothing written) otherwise."""
    cfg = split_predictions.evaluation_inputs(model_dir, trained, data_dir, batch_size)
    info = pipelines.dataset_info(cfg)
    calibration = calibration_images(cfg, plan) if plan.quantize == "int8" else None
    content = convert(trained, plan.quantize, calibration)
    metadata = describe(trained, info, plan, target, calibration, tree)
    converted = litert.LiteRTModel(content, metadata, plan.threads, source=f"the converted {plan.quantize} model")
    figures = parity(trained, converted, cfg)
    if figures["top1_agreement"] < plan.floor:
        raise ParityError(f"{plan.quantize} model agrees with model.keras on {figures['top1_agreement']:.4f} of "
                          f"the {figures['images']} {PARITY_SPLIT} images, under --min_agreement={plan.floor}: "
                          f"nothing written to {target.directory}; {_advice(plan)}")
    metadata.update(parity=figures, sha256=litert.sha256(content), bytes=len(content))
    _write_replacing(target.model, content)
    _write_replacing(target.metadata, (json.dumps(metadata, indent=1) + "\n").encode())
    return metadata


def convert(trained: trained_model.TrainedModel, quantize: str, calibration: list[np.ndarray] | None = None) -> bytes:
    """The .tflite bytes of the run's model (see the module docstring for each quantisation)."""
    with tempfile.TemporaryDirectory(prefix="litert_export_") as saved_model:
        archive = keras.export.ExportArchive()
        archive.track(trained.model)
        archive.add_endpoint(litert.SIGNATURE, trained.pixels_function)
        archive.write_out(saved_model, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=[litert.SIGNATURE])
        if quantize != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantize == "int8":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.representative_dataset = lambda: ({litert.INPUT_NAME: image[None]} for image in calibration)
        with litert.quiet_runtime():
            return converter.convert()


def calibration_images(cfg: pipelines.InputConfig, plan: Plan) -> list[np.ndarray]:
    """A seeded sample of the train split's images in the evaluation view, uint8 (all of them when fewer)."""
    available = pipelines.dataset_info(cfg).num_examples[CALIBRATION_SPLIT]
    rng = np.random.default_rng(plan.calibration_seed)
    chosen = np.sort(rng.choice(available, min(plan.calibration_images, available), replace=False))
    return split_predictions.images_at(cfg, CALIBRATION_SPLIT, chosen)


def parity(trained: trained_model.TrainedModel, converted: litert.LiteRTModel, cfg: pipelines.InputConfig) -> dict:
    """How the converted model's label-rank head compares with model.keras' on the validation split."""
    keras_side = split_predictions.predict_split(trained, cfg, PARITY_SPLIT)
    litert_side = split_predictions.predict_split(converted, cfg, PARITY_SPLIT)
    keras_top1, litert_top1 = keras_side.probabilities.argmax(1), litert_side.probabilities.argmax(1)
    return {"split": PARITY_SPLIT, "images": len(keras_side.labels),
            "top1_agreement": float(np.mean(keras_top1 == litert_top1)),
            "macro_f1_keras": metrics.macro_f1(keras_side.labels, keras_top1),
            "macro_f1_litert": metrics.macro_f1(litert_side.labels, litert_top1),
            "max_abs_probability_difference": float(np.abs(keras_side.probabilities
                                                           - litert_side.probabilities).max())}


def describe(trained: trained_model.TrainedModel, info: pipelines.DatasetInfo, plan: Plan, target: litert.LiteRTFiles,
             calibration: list[np.ndarray] | None, tree: dict) -> dict:
    """The metadata a field device needs beside the .tflite (parity and checksum are added once measured)."""
    phylum_of = trained.taxonomy.phylum_of(trained.label_rank)
    size = trained.input_size
    return {
        "format": "litert", "file": target.model.name, "quantization": plan.quantize,
        "input": {"name": litert.INPUT_NAME, "dtype": "uint8", "shape": [None, size, size, 3], "size": size,
                  "pixels": "RGB 0..255: the central square of the photo resized to size x size (antialiased "
                            "bilinear, rounded), as trainer.predict decodes it"},
        "outputs": {head: f"float32 softmax [batch, {len(names)}], in the order of labels.{head}"
                    for head, names in trained.label_names.items()},
        "labels": {head: list(names) for head, names in trained.label_names.items()},
        "label_rank": trained.label_rank,
        "label_phylum": {name: phylum_of[name] for name in trained.names},
        "taxonomy": trained.taxonomy.to_text(), "tree": tree,
        "dataset": info.full_name, "keras_model": trained.source,
        "calibration": None if calibration is None else {
            "split": CALIBRATION_SPLIT, "images": len(calibration), "seed": plan.calibration_seed},
        "converter": f"tensorflow {tf.__version__} TFLiteConverter.from_saved_model",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def format_parity(figures: dict) -> str:
    """The parity figures in one line, as the export prints them."""
    return (f"top-1 agreement {figures['top1_agreement']:.4f} on {figures['images']} {figures['split']} images, "
            f"macro-F1 keras {figures['macro_f1_keras']:.4f} / litert {figures['macro_f1_litert']:.4f}, "
            f"max |p difference| {figures['max_abs_probability_difference']:.2e}")


def _advice(plan: Plan) -> str:
    if plan.quantize == "int8":
        return ("calibrate on more images (--calibration_images), use --quantize=float16, or lower "
                "--min_agreement")
    return "check the model with `python -m trainer.evaluate`, or lower --min_agreement"


def _write_replacing(path: pathlib.Path, data: bytes) -> None:
    """Writes data so a reader sees the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)
