"""The export command, `python -m trainer.export`: a run's model for TF Serving or for the field.

    python -m trainer.export --model_dir=runs/incv3                                  # SavedModel
    python -m trainer.export --model_dir=runs/incv3 --format=litert  # --quantize=auto: the fastest faithful

--format=saved_model writes trained_model.py's SavedModel into --export_dir (default <model_dir>/saved_model), whose
endpoints also return the tree-consistent answer (consistent_names, consistent_probabilities: [batch, ranks],
phylum first) and, with --rollup_precision=P, the roll-up trainer.predict --rollup_precision=P gives
(rollup_rank, rollup_name, rollup_probability: [batch]; "", "", 0 where no rank is sure enough), computed in
the graph from the run's calibration.json (savedmodel_rollup.py); <export_dir>/metadata.json records the tree
(ranks, names, each label's path) and the precision, temperatures and per-rank thresholds of the roll-up;
--format=litert writes litert_export.py's <variant>.tflite, <variant>.json and labels.txt into --export_dir
(default <model_dir>/litert, where predict and evaluate --backend=litert look), after measuring parity on the
validation split; --quantize=auto (the default) keeps the fastest variant that reaches the floor and records
the choice in auto.json. The .json's "tree" is the same description (with --rollup_precision, its thresholds),
so a device can answer consistently and roll up from the heads' softmax rows. An existing export is never
replaced without --overwrite: the command stops in one line naming the path and the flag, before loading
anything (auto: any file it could write). With it, the new export is written beside the old one and takes
its place only when complete, so a failed export (or a refused parity) leaves the old one as it was.
"""

import dataclasses
import json
import pathlib

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

import pipelines
from trainer import cli
from trainer.cli import field
from trainer.numbers import rollup
from trainer.serving import (
    litert,
    litert_export,
    predict,
    savedmodel,
    savedmodel_rollup,
    split_predictions,
    trained_model,
)
from trainer.training import calibration_file, run_dir

FORMATS = ("saved_model", "litert")
METADATA_NAME = "metadata.json"  # beside the SavedModel: label rank, ranks, the roll-up's thresholds
PARITY_IMAGES = 64  # validation JPEGs the SavedModel is compared with predict on


class ExportError(cli.UserError):
    """An export that would replace another without --overwrite; the message is the one line shown."""


@dataclasses.dataclass(frozen=True)
class ExportSettings:
    """The export command's flags."""

    model_dir: str = field("", "Run directory holding model.keras and labels.json.", group="run", path=True)
    format: str = field("saved_model", "saved_model: for TF Serving; litert: a .tflite for phones, laptops and "
                        "camera traps (uint8 pixels in, probabilities out), with measured parity.", choices=FORMATS,
                        group="outputs")
    export_dir: str = field("", f"Where to write; empty = <model_dir>/{run_dir.SAVED_MODEL_DIR} (saved_model) or "
                            f"<model_dir>/{run_dir.LITERT_DIR} (litert, where predict/evaluate look).",
                            group="outputs", path=True)
    overwrite: bool = field(False, "Replace an existing export at the same path.", group="outputs")
    top_k: int = field(trained_model.DEFAULT_TOP_K, "saved_model: names at the model's label rank returned per image.",
                       lower=1, group="answers")
    rollup_precision: float = field(0.0, "Roll-up at this precision on validation (the run's calibration.json), "
                                    "as trainer.predict does, e.g. 0.95; 0 = off. saved_model: also return per "
                                    "image the deepest rank whose calibrated confidence reaches its threshold; "
                                    "litert: the temperatures and thresholds go into the metadata.",
                                    lower=0.0, upper=1.0, group="answers")
    quantize: str = field(litert.AUTO, "litert: auto = the fastest variant that reaches --min_agreement, tried "
                          f"in the order {', '.join(litert.FASTEST_FIRST)}; float32; float16 (half the size); "
                          "dynamic (int8 weights, float activations; a quarter of the size); int8 (full-integer, "
                          "calibrated on the train split); mixed (int8 with the first layers from the input kept "
                          "float, more each step until the floor holds).",
                          choices=(litert.AUTO, *litert.QUANTIZATIONS), group="litert")
    calibration_images: int = field(litert_export.DEFAULT_CALIBRATION_IMAGES, "litert int8, mixed: train-split "
                                    "images the quantisation ranges are calibrated on (a seeded sample).", lower=1,
                                    group="litert")
    calibration_seed: int = field(0, "litert int8, mixed: seed of the calibration sample.", group="litert")
    min_agreement: float = field(-1.0, "litert: the least top-1 agreement with model.keras on the validation "
                                 "split for a variant to be kept; negative = 0.99 (float32, float16) or 0.97 "
                                 "(dynamic, mixed, int8); 0 keeps any.", lower=-1.0, upper=1.0, group="litert")
    data_dir: str = field("", "litert: TFDS data_dir of the run's dataset (calibration, parity); empty = the "
                          "run's own (its flags.txt).", group="litert", path=True)
    batch_size: int = field(32, "litert: images per batch while measuring parity.", lower=1, group="litert")
    threads: int = field(0, "litert: interpreter threads while measuring parity; 0 = every core.", lower=0,
                         group="litert")


def export(settings: ExportSettings) -> pathlib.Path:
    """The whole command: the run's model written in --format, and what to run next; returns the path."""
    if not settings.model_dir:
        raise trained_model.RunNotFoundError("--model_dir is empty: name the run to export, e.g. "
                                             "--model_dir=runs/incv3")
    if settings.format == "litert":
        return _export_litert(settings)
    return _export_saved_model(settings)


def _export_saved_model(settings: ExportSettings) -> pathlib.Path:
    export_dir = pathlib.Path(settings.export_dir or pathlib.Path(settings.model_dir) / run_dir.SAVED_MODEL_DIR)
    _refuse_existing([export_dir.expanduser()], settings.overwrite)
    trained = trained_model.load_trained(settings.model_dir)
    tree_outputs = _tree_outputs(trained, settings)
    model = savedmodel.ServingModel(trained, settings.top_k, tree_outputs)
    metadata = {"label_rank": trained.label_rank, "top_k": model.top_k,
                **tree_outputs.metadata(settings.rollup_precision),
                "agreement_with_predict": agreement_with_predict(trained, model, settings.model_dir)}

    def write(partial: pathlib.Path) -> None:
        savedmodel.export_saved_model(model, partial)
        (partial / METADATA_NAME).write_text(json.dumps(metadata, indent=1) + "\n")

    path = run_dir.replace_folder(export_dir.expanduser(), write)
    rolled = ", rollup_rank, rollup_name, rollup_probability: [batch]" if settings.rollup_precision else ""
    print(f"SavedModel written to {path}\n"
          f"  serving_default(images: string[batch]) and classify_images(images: uint8[batch, h, w, 3])\n"
          f"  -> names ({model.trained.label_rank}), phyla, probabilities: [batch, {model.top_k}]; "
          f"consistent_names, consistent_probabilities: [batch, {len(tree_outputs.tree.ranks)}]{rolled}\n"
          f"  agreement with predict: {_agreement_line(metadata['agreement_with_predict'])}\n"
          f"  metadata: {path / METADATA_NAME}\n"
          f"  check: saved_model_cli show --dir {path} --all")
    return path


def agreement_with_predict(trained: trained_model.TrainedModel, model: savedmodel.ServingModel,
                           model_dir: str) -> dict:
    """The SavedModel's endpoint on up to PARITY_IMAGES of the run's validation JPEGs against predict decoding
    the same bytes: the share with the same top-1 name and the largest difference of a top-k probability (0
    when the two decoders give the same pixels, as they should). Not measured without the run's dataset."""
    try:
        cfg = split_predictions.evaluation_inputs(model_dir, trained)
        stored = pipelines.reading.load_builder(cfg).as_dataset(
            split="validation", decoders={"image": tfds.decode.SkipDecoding()}).take(PARITY_IMAGES)
        jpegs = [example["image"] for example in stored.as_numpy_iterator()]
    except (cli.UserError, pipelines.DatasetNotBuiltError) as error:
        return {"measured": False, "why": str(error)}
    served = model.classify_encoded(tf.constant(jpegs))
    views = np.stack([predict.decode_bytes_view(data, trained.input_size) for data in jpegs])
    rows = trained.probabilities(views)[trained.label_rank]
    order = np.argsort(-rows, axis=1, kind="stable")[:, :model.top_k]
    same = served["names"].numpy()[:, 0] == np.asarray(trained.names, dtype=object)[order[:, 0]].astype(bytes)
    difference = np.abs(served["probabilities"].numpy() - np.take_along_axis(rows, order, axis=1)).max()
    return {"measured": True, "images": len(jpegs), "top1_agreement": float(same.mean()),
            "max_probability_difference": float(difference)}


def _agreement_line(agreement: dict) -> str:
    if not agreement["measured"]:
        return f"not measured ({agreement['why']})"
    return (f"top-1 {agreement['top1_agreement']:.4f} on {agreement['images']} validation images, probabilities "
            f"within {agreement['max_probability_difference']:.1e}")


def _tree_outputs(trained: trained_model.TrainedModel, settings: ExportSettings) -> savedmodel_rollup.TreeOutputs:
    """The in-graph consistent answer, with the roll-up of the run's calibration.json when asked for."""
    tree = rollup.label_tree(trained.label_names, trained.taxonomy)
    if not settings.rollup_precision:
        return savedmodel_rollup.TreeOutputs.of(tree)
    calibrated = calibration_file.read_matching(settings.model_dir, tree, trained.label_names)
    return savedmodel_rollup.TreeOutputs.of(tree, calibrated, settings.rollup_precision)


def _export_litert(settings: ExportSettings) -> pathlib.Path:
    directory = pathlib.Path(settings.export_dir).expanduser() if settings.export_dir else litert.default_dir(
        settings.model_dir)
    if directory.exists() and not directory.is_dir():
        raise ExportError(f"--export_dir={directory} is a file: name a folder (or leave it empty for "
                          f"{litert.default_dir(settings.model_dir)})")
    _refuse_existing(_litert_targets(directory, settings.quantize), settings.overwrite)
    plan = litert_export.Plan(settings.quantize, settings.calibration_images, settings.calibration_seed,
                              settings.min_agreement, settings.threads, settings.data_dir, settings.batch_size)
    trained = trained_model.load_trained(settings.model_dir)
    _refuse_other_labels(directory / litert.LABELS_NAME, trained.names, settings.overwrite)
    tree = _tree_outputs(trained, settings).metadata(settings.rollup_precision)
    if settings.quantize == litert.AUTO:
        print(f"LiteRT auto: trying {', '.join(plan.variants)} (fastest first) on the {litert_export.PARITY_SPLIT} "
              "split; the first whose top-1 agreement with model.keras reaches its floor is kept", flush=True)
    result = litert_export.export(trained, settings.model_dir, directory, plan, tree,
                                  progress=lambda line: print(f"  {line}", flush=True))
    chosen, files = result.chosen, result.files
    refused = "; ".join(candidate.summary(plan.floor(candidate.quantize)) for candidate in result.refused)
    print(f"LiteRT {chosen.quantize} model written to {files.model} ({len(chosen.content) / 1e6:.1f} MB, "
          f"{chosen.images_per_second:.0f} images/s), metadata {files.metadata.name}, {litert.LABELS_NAME}"
          f"{', ' + litert.CHOICE_NAME if settings.quantize == litert.AUTO else ''}\n"
          f"{'  faster variants refused: ' + refused + chr(10) if refused else ''}"
          f"  parity with model.keras: {litert_export.format_parity(chosen.parity)}\n"
          f"  use: python -m trainer.predict --model_dir={settings.model_dir} --backend=litert "
          f"--quantize={settings.quantize} photos/")
    return files.model


def _litert_targets(directory: pathlib.Path, quantize: str) -> list[pathlib.Path]:
    """The files the export may write (labels.txt apart: _refuse_other_labels); auto may keep any variant."""
    if quantize != litert.AUTO:
        files = litert.LiteRTFiles(directory, quantize)
        return [files.model, files.metadata]
    variants = [litert.LiteRTFiles(directory, variant) for variant in litert.QUANTIZATIONS]
    return [directory / litert.CHOICE_NAME, *(path for files in variants for path in (files.model, files.metadata))]


def _refuse_other_labels(path: pathlib.Path, names: tuple[str, ...], overwrite: bool) -> None:
    """labels.txt is shared by the exports of one folder: another model's is replaced only with --overwrite."""
    if path.exists() and not overwrite and (not path.is_file() or path.read_text() != litert.labels_text(names)):
        raise ExportError(f"{path} lists the labels of another model: pass --overwrite to replace it, or choose "
                          "another --export_dir")


def _refuse_existing(paths: list[pathlib.Path], overwrite: bool) -> None:
    existing = [path for path in paths if path.exists()]
    if existing and not overwrite:
        raise ExportError(f"{existing[0]} exists: pass --overwrite to replace it, or choose another --export_dir")
