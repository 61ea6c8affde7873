"""Evaluates a finished run on any split and writes what a person reads into <model_dir>/eval/<split>/.

    python -m trainer.evaluate --model_dir=runs/incv3 --split=test [--gap] [--tta=flip,crops]
        [--data_dir=DIR] [--batch_size=32] [--resamples=1000] [--backend=litert [--quantize=int8]]

Loads model.keras and labels.json (trainer.serving.load_trained), or with --backend=litert the run's LiteRT
export (trainer/evaluation/predictors.py), reads the split through pipelines' evaluation view (no
augmentation, every example exactly once, in stored order), predicts, and hands labels and probabilities to
trainer.reports: metrics.json, per_class.csv, confusions.csv, confusion_matrix.png, reliability.png,
mistakes.png and mistakes.html (thumbnails in mistakes/); then prints a one-screen summary. The report goes to
<model_dir>/eval/<split>/, a LiteRT model's to <model_dir>/eval/<split>_litert_<quantize>/ (so the two can be
compared file by file); metrics.json names the backend and the model file. The data_dir and dataset config are
the run's (its flags.txt) unless --data_dir is given.

--gap also predicts the train split and adds the train metrics and train-minus-split differences.
--tta averages the probabilities over extra views: flip (mirrored), crops (four corners and the centre, each
CROP_FRACTION of the side, resized back to the input size); a LiteRT model gets each view rounded to the
uint8 pixels it takes.
"""

import dataclasses
import math
import pathlib

import numpy as np
import tensorflow as tf
import tqdm

import pipelines
from tfds_rarespecies import labels
from trainer import cli, inputs
from trainer import config as config_lib
from trainer.cli import field
from trainer.evaluation import litert, metrics, predictors, reports, serving
from trainer.run_dir import RunFiles

TTA_MODES = ("flip", "crops")
CROP_FRACTION = 0.875
EVAL_DIR_NAME = "eval"


class EvaluationError(cli.UserError):
    """An evaluation that cannot run; the message is the one line shown to the user."""


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """What to evaluate and how; each field is the flag of the same name (seed: --bootstrap_seed)."""

    model_dir: str = field("", "A finished run of trainer.main (model.keras, labels.json, flags.txt).")
    split: str = field("test", "Split to evaluate (train, validation, test, or e.g. train+validation).")
    data_dir: str = field("", "TFDS data_dir holding the run's dataset; empty = the run's own (its flags.txt).")
    batch_size: int = field(32, "Images per prediction batch.", lower=1)
    gap: bool = field(False, "Also evaluate train and report train minus --split.")
    tta: tuple[str, ...] = field((), f"Test-time augmentation: any of {','.join(TTA_MODES)}.")
    resamples: int = field(metrics.BOOTSTRAP_RESAMPLES, "Bootstrap resamples of the 95% intervals.", lower=10)
    seed: int = field(0, "Seed of the bootstrap resampling.", flag_name="bootstrap_seed")
    backend: str = predictors.backend_field()
    quantize: str = predictors.quantize_field()
    threads: int = predictors.threads_field()


@dataclasses.dataclass(frozen=True)
class SplitPredictions:
    """Family ids, softmax rows and file names of every example of a split, in stored order."""

    labels: np.ndarray
    probabilities: np.ndarray
    file_names: list[str]


def evaluate(config: EvaluationConfig) -> reports.Report:
    """Predicts the split, writes its report into <model_dir>/eval/<split>/ and prints the summary."""
    if not config.model_dir:
        raise EvaluationError("--model_dir is empty: name the run to evaluate, e.g. --model_dir=runs/incv3")
    unknown = sorted(set(config.tta) - set(TTA_MODES))
    if unknown:
        raise EvaluationError(f"--tta={','.join(config.tta)}: unknown mode {', '.join(unknown)}; use any of "
                              f"{','.join(TTA_MODES)}")
    predictor = predictors.open_predictor(config.model_dir, config.backend, config.quantize, config.threads)
    cfg = evaluation_inputs(config.model_dir, predictor, config.data_dir, config.batch_size)
    info = pipelines.dataset_info(cfg)
    if tuple(info.family_names) != predictor.family_names:
        raise EvaluationError(f"{predictor.source}: the model's family names differ from {info.full_name}'s: "
                              "evaluate on the dataset the run was trained on")
    predictions = predict_split(predictor, cfg, config.split, config.tta)
    extra = {"split": config.split, "dataset": info.full_name, "data_dir": cfg.data_dir,
             "model_dir": config.model_dir, "tta": list(config.tta), "backend": config.backend,
             "model": predictor.source}
    if config.gap and config.split != "train":
        train = predict_split(predictor, cfg, "train", config.tta)
        train_metrics = metrics.headline_metrics(train.labels, train.probabilities)
        extra["train"] = train_metrics
        extra["gap"] = metrics.train_gap(train_metrics, metrics.headline_metrics(predictions.labels,
                                                                                 predictions.probabilities))
    out_dir = report_dir(config.model_dir, config.split, predictor)
    report = reports.write_report(
        out_dir, predictions.labels, predictions.probabilities, predictor.family_names, labels.family_to_phylum(),
        title=f"{info.full_name} {config.split}", file_names=predictions.file_names,
        load_images=lambda indices: images_at(cfg, config.split, indices), extra=extra,
        resamples=config.resamples, seed=config.seed)
    print(reports.format_summary(report, heading=f"{info.full_name} {config.split} -> {out_dir}"))
    return report


def report_dir(model_dir: str, split: str, predictor: predictors.Predictor) -> pathlib.Path:
    """<model_dir>/eval/<split>/ for model.keras, eval/<split>_litert_<quantize>/ for a LiteRT export."""
    name = split.replace("/", "_")
    if isinstance(predictor, litert.LiteRTModel):
        name += f"_litert_{predictor.metadata['quantization']}"
    return pathlib.Path(model_dir).expanduser() / EVAL_DIR_NAME / name


def run_config(model_dir: str) -> config_lib.Config:
    """The run's own configuration, read back from its flags.txt."""
    flagfile = RunFiles(pathlib.Path(model_dir).expanduser()).flagfile
    if not flagfile.is_file():
        raise serving.RunNotFoundError(f"{flagfile} not found: {model_dir} holds no run of trainer.main")
    return config_lib.parse([f"--flagfile={flagfile}"])


def evaluation_inputs(model_dir: str, predictor: predictors.Predictor, data_dir: str = "",
                      batch_size: int = 32) -> pipelines.InputConfig:
    """The evaluation view (trainer.inputs.evaluation_view, as train.run's final evaluation reads it) of the
    run's dataset at the model's input size."""
    run = run_config(model_dir)
    return dataclasses.replace(inputs.evaluation_view(inputs.input_config(run)), image_size=predictor.input_size,
                               batch_size=batch_size,
                               data_dir=str(pathlib.Path(data_dir or run.data_dir).expanduser()))


def predict_split(predictor: predictors.Predictor, cfg: pipelines.InputConfig, split: str,
                  tta: tuple[str, ...] = ()) -> SplitPredictions:
    """Family softmax rows of every example of the split (averaged over the TTA views), with its labels and
    names."""
    dataset = evaluation_batches(cfg, split)
    modes = [mode for mode in TTA_MODES if mode in tta]
    views = (tf.function(lambda images: tta_views(images, modes, predictor.input_size), reduce_retracing=True)
             if modes else lambda images: [images])

    def family(images):
        return np.mean([predictor.probabilities(view)["family"] for view in views(images)], axis=0)

    batches = [(family(images), families, names)
               for images, families, names in tqdm.tqdm(dataset.as_numpy_iterator(), desc=f"Predicting {split}",
                                                         total=_batches(cfg, split), unit=" batches")]
    if not batches:
        raise EvaluationError(f"split {split} of {cfg.dataset_config} is empty: choose another --split")
    probabilities, families, names = zip(*batches)
    return SplitPredictions(np.concatenate(families).astype(np.int64), np.concatenate(probabilities),
                            [name.decode() for name in np.concatenate(names)])


def tta_views(images: tf.Tensor, modes: list[str], size: int) -> list[tf.Tensor]:
    """The views whose probabilities are averaged: the float 0..255 batch itself; with "crops" its four corner
    and central crops (CROP_FRACTION of the side, resized back to size); with "flip" each of those mirrored."""
    views = [images]
    if "crops" in modes:
        margin = 1.0 - CROP_FRACTION
        boxes = [(0.0, 0.0, CROP_FRACTION, CROP_FRACTION), (0.0, margin, CROP_FRACTION, 1.0),
                 (margin, 0.0, 1.0, CROP_FRACTION), (margin, margin, 1.0, 1.0),
                 (margin / 2, margin / 2, 1.0 - margin / 2, 1.0 - margin / 2)]
        count = tf.shape(images)[0]
        views += [tf.image.crop_and_resize(images, tf.tile(tf.constant([box]), [count, 1]), tf.range(count),
                                           [size, size]) for box in boxes]
    if "flip" in modes:
        views += [tf.image.flip_left_right(view) for view in views]
    return views


def images_at(cfg: pipelines.InputConfig, split: str, indices: np.ndarray) -> list[np.ndarray]:
    """The model's view (uint8) of the examples at the given positions of the split, in the order asked:
    a second pass over the same deterministic evaluation pipeline, keeping only those."""
    wanted = {int(index): rank for rank, index in enumerate(indices)}
    found: list[np.ndarray | None] = [None] * len(indices)
    start = 0
    for images, _, _ in evaluation_batches(cfg, split).as_numpy_iterator():
        for position in range(start, start + len(images)):
            if position in wanted:
                found[wanted[position]] = images[position - start].astype(np.uint8)
        start += len(images)
        if start > max(wanted, default=-1):
            break
    return found


def evaluation_batches(cfg: pipelines.InputConfig, split: str) -> tf.data.Dataset:
    try:
        return pipelines.make_dataset(cfg, split, training=False, with_file_names=True)
    except (KeyError, ValueError) as error:
        raise EvaluationError(f"--split={split}: not a split of {cfg.dataset_config} ({error}); use train, "
                              "validation, test or split arithmetic such as train+validation") from None


def _batches(cfg: pipelines.InputConfig, split: str) -> int | None:
    examples = pipelines.dataset_info(cfg).num_examples.get(split)
    return None if examples is None else math.ceil(examples / cfg.batch_size)
