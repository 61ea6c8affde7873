"""The LiteRT export of a run, `python -m trainer.export --format=litert --quantize=auto|<variant>`:
model_dir/litert/<variant>.tflite, its metadata <variant>.json and labels.txt (trainer/serving/litert.py describes
them), kept only when it agrees with the Keras model on the validation split.

Conversion. TFLiteConverter.from_keras_model fails on Keras 3 models (keras-team/keras#19108); the working path
is a SavedModel written by Keras' own exporter (keras.export.ExportArchive, what model.export(path,
"tf_saved_model") runs), here with one endpoint, TrainedModel.pixels_function: uint8 pixels in, so the cast and
the backbone's input scaling are inside the .tflite, and every head's softmax out. Then from_saved_model, one
variant each (litert.QUANTIZATIONS); the input stays uint8 pixels and the outputs float32 probabilities:
- float32: the graph as is.
- float16: weights stored as float16 (half the bytes), computed in float32.
- dynamic: dynamic-range quantisation: weights int8 (a quarter of the bytes), activations float, quantised
  on the fly per batch by XNNPACK's dynamically quantised convolutions and fully connected layers; no
  calibration, so no range is fixed in advance and fine cues survive.
- int8: full-integer post-training quantisation, weights and activations (TFLITE_BUILTINS_INT8 only, so a
  model that cannot be fully quantised fails instead of silently keeping float ops), calibrated on
  --calibration_images images of the train split (a seeded sample, in the evaluation view) and never on
  validation or test, which judge it.
- mixed: int8 calibrated the same way, with the first quantised layers from the input kept float, more of
  them each step (1, 2, 3, 5, 8, 12, ...: half as many again) until the agreement floor holds. TensorFlow's
  quantisation debugger (tf.lite.experimental.QuantizationDebugger) calibrates once, measures each layer's
  error on DEBUG_IMAGES of the calibration images and lists the layers in model order; each step is its
  model with those layers denylisted. Keeping the input end float beat keeping the layers of the largest
  measured error float (BUILD-notes): the cues lost are small tint differences, gone for good once the first
  layers round them, while a later layer's rounding is averaged out. The .json names the float layers and
  records every layer's measured error. Under auto a mixed model is refused once its float layers make it
  slower than dynamic (measured first), which comes next in line and is smaller.

Parity. The Keras model and the converted one predict the validation split through split_predictions.predict_split
(the view and batches trainer.evaluate uses): top-1 agreement, the macro-F1 of each against the labels, and the
largest absolute difference of a probability of the label rank's head; the interpreter's images per second on
those batches is the speed figure. Under --min_agreement (negative = FLOORS of the variant; 0 keeps any) the
export fails in one line and nothing is written. --quantize=auto tries litert.FASTEST_FIRST in turn and keeps the
first that reaches its floor, recording the choice and every refusal in auto.json; when none does, nothing is
written.
"""

import contextlib
import dataclasses
import datetime
import functools
import io
import json
import math
import os
import pathlib
import tempfile
from collections.abc import Callable, Iterator

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

import pipelines
from trainer import cli
from trainer.numbers import metrics
from trainer.serving import litert, split_predictions, trained_model

FLOORS = {"float32": 0.99, "float16": 0.99, "dynamic": 0.97, "mixed": 0.97, "int8": 0.97}
CALIBRATED = ("int8", "mixed")
CALIBRATION_SPLIT = "train"
PARITY_SPLIT = "validation"
DEFAULT_CALIBRATION_IMAGES = 500
DEBUG_IMAGES = 64  # calibration images the quantisation debugger measures each layer's error on


class ConversionError(cli.UserError):
    """The TFLite converter refused the model: one line naming the variant."""


class ParityError(cli.UserError):
    """The converted model disagrees with the Keras model more than allowed; nothing was written."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """How to convert and judge the export (the export command's flags of the same names)."""

    quantize: str = "float32"  # a variant of litert.QUANTIZATIONS, or litert.AUTO
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES
    calibration_seed: int = 0
    min_agreement: float = -1.0
    threads: int = 0
    data_dir: str = ""
    batch_size: int = 32

    @property
    def variants(self) -> tuple[str, ...]:
        return litert.FASTEST_FIRST if self.quantize == litert.AUTO else (self.quantize,)

    def floor(self, variant: str) -> float:
        return FLOORS[variant] if self.min_agreement < 0 else self.min_agreement


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One converted variant and what it measured."""

    quantize: str
    content: bytes
    parity: dict
    images_per_second: float
    float_layers: tuple[str, ...] = ()  # mixed: the layers kept float
    layer_errors: dict | None = None  # mixed: every quantised layer's measured error (layer_errors)
    slower_than: str = ""  # auto's mixed: the variant after it that is faster, so mixed is refused whatever it agrees

    def kept(self, floor: float) -> bool:
        return self.parity["top1_agreement"] >= floor and not self.slower_than

    def agreement(self, floor: float) -> str:
        """Its agreement against the floor, and why a mixed model that reaches it was refused."""
        slower = f", slower than {self.slower_than}" if self.slower_than else ""
        return (f"{self.parity['top1_agreement']:.4f} {'>=' if self.parity['top1_agreement'] >= floor else '<'} "
                f"{floor:g}{slower}")

    def summary(self, floor: float) -> str:
        """One line: agreement against the floor, size and speed (and mixed's float layers)."""
        kept = "" if not self.float_layers else f" with {len(self.float_layers)} layers float"
        return (f"{self.quantize}{kept}: top-1 agreement {self.agreement(floor)}, "
                f"{len(self.content) / 1e6:.1f} MB, {self.images_per_second:.0f} images/s")

    def figures(self, floor: float) -> dict:
        """What auto.json records of a variant tried."""
        return {"quantization": self.quantize, "top1_agreement": self.parity["top1_agreement"], "floor": floor,
                "bytes": len(self.content), "images_per_second": round(self.images_per_second, 1),
                "float_layers": len(self.float_layers), "slower_than": self.slower_than or None,
                "kept": self.kept(floor)}


@dataclasses.dataclass(frozen=True)
class Result:
    """The export written: the kept variant, its files and metadata, and the faster variants refused first."""

    chosen: Candidate
    files: litert.LiteRTFiles
    metadata: dict
    refused: tuple[Candidate, ...]


class Judge:
    """What every variant is measured against, computed once: the evaluation view of the run's dataset,
    model.keras' answers on validation and (when a variant needs it) the calibration sample."""

    def __init__(self, trained: trained_model.TrainedModel, model_dir: str, plan: Plan):
        self.trained, self.plan = trained, plan
        self.cfg = split_predictions.evaluation_inputs(model_dir, trained, plan.data_dir, plan.batch_size)
        self.keras_side = split_predictions.predict_split(trained, self.cfg, PARITY_SPLIT)

    @functools.cached_property
    def calibration(self) -> list[np.ndarray]:
        return calibration_images(self.cfg, self.plan)

    def measure(self, quantize: str, content: bytes, float_layers: tuple[str, ...] = (),
                layer_errors: dict | None = None) -> Candidate:
        described = {"labels": self.trained.label_names, "input": {"size": self.trained.input_size},
                     "taxonomy": self.trained.taxonomy.to_text()}
        converted = litert.LiteRTModel(content, described, self.plan.threads, source=f"the converted {quantize} model")
        figures = parity(self.keras_side, split_predictions.predict_split(converted, self.cfg, PARITY_SPLIT))
        return Candidate(quantize, content, figures, converted.answered / max(converted.busy_seconds, 1e-9),
                         float_layers, layer_errors)


def export(trained: trained_model.TrainedModel, model_dir: str, directory: pathlib.Path, plan: Plan, tree: dict,
           progress: Callable[[str], None] = lambda line: None) -> Result:
    """Converts each variant of the plan in turn, keeps the first whose agreement reaches its floor and writes
    it (with auto: auto.json too); progress gets one line per variant measured (tree: the tree and roll-up the
    export command describes, serving_rollup.TreeOutputs.metadata). Raises ParityError (nothing written) when
    no variant reaches its floor."""
    judge, measured = Judge(trained, model_dir, plan), {}
    with _saved_model(trained) as saved_model:
        for index, variant in enumerate(plan.variants):
            candidate = _measured(variant, saved_model, judge, measured, progress)
            progress(candidate.summary(plan.floor(variant)))
            if candidate.kept(plan.floor(variant)):
                refused = [measured[earlier] for earlier in plan.variants[:index]]
                return _write(judge, directory, candidate, refused, tree)
    raise ParityError(_refusal(plan, list(measured.values()), directory))


def _measured(variant: str, saved_model: str, judge: Judge, measured: dict, progress: Callable[[str], None]
              ) -> Candidate:
    """The variant converted and measured, once. Under auto, mixed is bounded by dynamic, measured first: a
    mixed model whose float layers make it slower than dynamic is refused (dynamic is next in line)."""
    if variant in measured:
        return measured[variant]
    if variant != "mixed":
        content = convert_saved_model(saved_model, variant, _calibration_for(variant, judge))
        measured[variant] = judge.measure(variant, content)
        return measured[variant]
    bound = _measured("dynamic", saved_model, judge, measured, progress) if judge.plan.quantize == litert.AUTO \
        else None
    floor = judge.plan.floor(variant)
    for candidate in mixed_steps(saved_model, judge.calibration, judge.measure):
        if bound is not None and candidate.images_per_second < bound.images_per_second:
            candidate = dataclasses.replace(candidate, slower_than=f"dynamic ({bound.images_per_second:.0f} "
                                                                   "images/s)")
            break
        if candidate.parity["top1_agreement"] >= floor:
            break
        progress(f"  {candidate.summary(floor)}: keeping more layers float")
    measured[variant] = candidate
    return candidate


def convert_saved_model(saved_model: str, quantize: str, calibration: list[np.ndarray] | None = None) -> bytes:
    """The .tflite bytes of the pixels SavedModel as one variant other than mixed (see the module docstring);
    a model the converter refuses (an op without a LiteRT kernel, a flatbuffer over 2 GB) is one line."""
    try:
        with litert.quiet_runtime():
            return _converter(saved_model, quantize, calibration).convert()
    except Exception as error:  # noqa: BLE001 (the converter raises ConverterError, ValueError, RuntimeError...)
        detail = " ".join(str(error).split())[:300] or type(error).__name__
        raise ConversionError(f"LiteRT cannot convert the model to --quantize={quantize} ({detail}); try another "
                              "--quantize, or serve the SavedModel (trainer.export --format=savedmodel)") from None


def mixed_steps(saved_model: str, calibration: list[np.ndarray],
                measure: Callable[..., Candidate]) -> Iterator[Candidate]:
    """int8 with the first 1, 2, 3, 5, 8, ... quantised layers from the input kept float, up to all but one."""
    with litert.quiet_runtime():
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=_converter(saved_model, "mixed", calibration),
            debug_dataset=lambda: ([image[None]] for image in calibration[:DEBUG_IMAGES]))
        debugger.run()
    layers = layer_errors(debugger)
    last = len(layers) - 1  # the debugger cannot denylist every layer (and that would be float32)
    count = min(1, last)
    while True:
        with litert.quiet_runtime():
            debugger.options = tf.lite.experimental.QuantizationDebugOptions(
                denylisted_nodes=list(layers.index[:count]))
            content = debugger.get_nondebug_quantized_model()
        yield measure("mixed", content, tuple(layers.index[:count]), layers["error"].round(4).to_dict())
        if count >= last:
            return
        count = min(max(count + 1, math.ceil(count * 1.5)), last)


def layer_errors(debugger) -> pd.DataFrame:
    """The quantised layers in model order (indexed by output tensor, the name the debugger denylists) with
    their error: root mean square error over the quantisation step (the debugger guide's rmse/scale),
    averaged over the debug images."""
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    dump.seek(0)
    layers = pd.read_csv(dump).drop_duplicates("tensor_name").set_index("tensor_name")
    layers["error"] = np.sqrt(layers["mean_squared_error"]) / layers["scale"]
    return layers


def _converter(saved_model: str, quantize: str, calibration: list[np.ndarray] | None) -> tf.lite.TFLiteConverter:
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=[litert.SIGNATURE])
    if quantize != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize in CALIBRATED:
        converter.representative_dataset = lambda: ({litert.INPUT_NAME: image[None]} for image in calibration)
    if quantize == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter


@contextlib.contextmanager
def _saved_model(trained: trained_model.TrainedModel) -> Iterator[str]:
    """A temporary SavedModel of the pixels endpoint, what every variant is converted from."""
    with tempfile.TemporaryDirectory(prefix="litert_export_") as saved_model:
        archive = keras.export.ExportArchive()
        archive.track(trained.model)
        archive.add_endpoint(litert.SIGNATURE, trained.pixels_function)
        archive.write_out(saved_model, verbose=False)
        yield saved_model


def _calibration_for(variant: str, judge: Judge) -> list[np.ndarray] | None:
    return judge.calibration if variant in CALIBRATED else None


def calibration_images(cfg: pipelines.InputConfig, plan: Plan) -> list[np.ndarray]:
    """A seeded sample of the train split's images in the evaluation view, uint8 (all of them when fewer)."""
    available = pipelines.dataset_info(cfg).num_examples[CALIBRATION_SPLIT]
    rng = np.random.default_rng(plan.calibration_seed)
    chosen = np.sort(rng.choice(available, min(plan.calibration_images, available), replace=False))
    return split_predictions.images_at(cfg, CALIBRATION_SPLIT, chosen)


def parity(keras_side: split_predictions.SplitPredictions, litert_side: split_predictions.SplitPredictions) -> dict:
    """How the converted model's label-rank head compares with model.keras' on the validation split."""
    keras_top1, litert_top1 = keras_side.probabilities.argmax(1), litert_side.probabilities.argmax(1)
    return {"split": PARITY_SPLIT, "images": len(keras_side.labels),
            "top1_agreement": float(np.mean(keras_top1 == litert_top1)),
            "macro_f1_keras": metrics.macro_f1(keras_side.labels, keras_top1),
            "macro_f1_litert": metrics.macro_f1(litert_side.labels, litert_top1),
            "max_abs_probability_difference": float(np.abs(keras_side.probabilities
                                                           - litert_side.probabilities).max())}


def describe(judge: Judge, candidate: Candidate, files: litert.LiteRTFiles, tree: dict) -> dict:
    """The metadata a field device needs beside the .tflite, with the figures measured."""
    trained, plan = judge.trained, judge.plan
    phylum_of = trained.taxonomy.phylum_of(trained.label_rank)
    size = trained.input_size
    calibrated = candidate.quantize in CALIBRATED
    return {
        "format": "litert", "file": files.model.name, "quantization": candidate.quantize,
        "input": {"name": litert.INPUT_NAME, "dtype": "uint8", "shape": [None, size, size, 3], "size": size,
                  "pixels": "RGB 0..255: the central square of the photo resized to size x size (antialiased "
                            "bilinear, rounded), as trainer.predict decodes it"},
        "outputs": {head: f"float32 softmax [batch, {len(names)}], in the order of labels.{head}"
                    for head, names in trained.label_names.items()},
        "labels": {head: list(names) for head, names in trained.label_names.items()},
        "labels_file": litert.LABELS_NAME,
        "label_rank": trained.label_rank,
        "label_phylum": {name: phylum_of[name] for name in trained.names},
        "taxonomy": trained.taxonomy.to_text(), "tree": tree,
        "dataset": pipelines.dataset_info(judge.cfg).full_name, "keras_model": trained.source,
        "calibration": {"split": CALIBRATION_SPLIT, "images": len(judge.calibration),
                        "seed": plan.calibration_seed} if calibrated else None,
        "float_layers": list(candidate.float_layers) if candidate.quantize == "mixed" else None,
        "layer_errors": candidate.layer_errors,
        "speed": {"images_per_second": round(candidate.images_per_second, 1), "batch_size": plan.batch_size,
                  "threads": plan.threads or litert.default_threads(), "measured_on": PARITY_SPLIT},
        "converter": f"tensorflow {tf.__version__} TFLiteConverter.from_saved_model",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "parity": candidate.parity, "sha256": litert.sha256(candidate.content), "bytes": len(candidate.content),
    }


def format_parity(figures: dict) -> str:
    """The parity figures in one line, as the export prints them."""
    return (f"top-1 agreement {figures['top1_agreement']:.4f} on {figures['images']} {figures['split']} images, "
            f"macro-F1 keras {figures['macro_f1_keras']:.4f} / litert {figures['macro_f1_litert']:.4f}, "
            f"max |p difference| {figures['max_abs_probability_difference']:.2e}")


def _write(judge: Judge, directory: pathlib.Path, chosen: Candidate, refused: list[Candidate], tree: dict) -> Result:
    """The kept variant's .tflite, .json and labels.txt; with auto, auto.json last (the choice names whole files)."""
    files = litert.LiteRTFiles(directory, chosen.quantize)
    metadata = describe(judge, chosen, files, tree)
    write_replacing(files.model, chosen.content)
    write_replacing(files.metadata, (json.dumps(metadata, indent=1) + "\n").encode())
    write_replacing(directory / litert.LABELS_NAME, litert.labels_text(judge.trained.names).encode())
    if judge.plan.quantize == litert.AUTO:
        tried = [candidate.figures(judge.plan.floor(candidate.quantize)) for candidate in (*refused, chosen)]
        record = {"chosen": chosen.quantize, "file": files.model.name, "sha256": metadata["sha256"],
                  "order": list(litert.FASTEST_FIRST), "tried": tried, "created": metadata["created"]}
        write_replacing(directory / litert.CHOICE_NAME, (json.dumps(record, indent=1) + "\n").encode())
    return Result(chosen, files, metadata, tuple(refused))


def _refusal(plan: Plan, refused: list[Candidate], directory: pathlib.Path) -> str:
    refused = sorted(refused, key=lambda candidate: plan.variants.index(candidate.quantize))
    figures = refused[-1].parity
    if plan.quantize != litert.AUTO:
        return (f"{plan.quantize} model agrees with model.keras on {figures['top1_agreement']:.4f} of the "
                f"{figures['images']} {PARITY_SPLIT} images, under --min_agreement={plan.floor(plan.quantize)}: "
                f"nothing written to {directory}; {_advice(plan.quantize)}")
    tried = "; ".join(f"{candidate.quantize} {candidate.agreement(plan.floor(candidate.quantize))}"
                      for candidate in refused)
    return (f"--quantize=auto: no variant agrees with model.keras enough on the {figures['images']} "
            f"{PARITY_SPLIT} images ({tried}): nothing written to {directory}; {_advice(litert.AUTO)}")


def _advice(quantize: str) -> str:
    if quantize in CALIBRATED:
        return ("calibrate on more images (--calibration_images), use --quantize=auto, or lower "
                "--min_agreement")
    if quantize == "dynamic":
        return "use --quantize=auto (it tries float16 and float32 next), or lower --min_agreement"
    return "check the model with `python -m trainer.evaluate`, or lower --min_agreement"


def write_replacing(path: pathlib.Path, data: bytes) -> None:
    """Writes data so a reader sees the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)
