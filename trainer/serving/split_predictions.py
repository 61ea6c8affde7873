"""A finished run's model over a split of its dataset: the evaluation view (as training's final evaluation reads
it, at the model's input size, with the ids at every rank), every head's softmax rows in stored order, averaged
over test-time augmentation views, and the model's view of chosen examples for contact sheets.

Evaluation judges what predict_split returns; the LiteRT export measures its agreement with the Keras model and
draws its int8 calibration images through the same functions, so both see the pixels evaluate sees.
"""

import dataclasses
import math
import pathlib

import numpy as np
import tensorflow as tf
import tqdm

import pipelines
from tfds_rarespecies import labels
from trainer import cli
from trainer.serving import predictors, trained_model
from trainer.training import config as config_lib
from trainer.training import inputs
from trainer.training.run_dir import RunFiles

TTA_MODES = ("flip", "crops")
CROP_FRACTION = 0.875


class SplitError(cli.UserError):
    """A split that cannot be read or predicted; the message is the one line shown to the user."""


@dataclasses.dataclass(frozen=True)
class SplitPredictions:
    """Every example of a split placed at the label rank, in stored order: its ids at every rank (truth, -1
    where the taxonomy has none), each head's softmax rows, its file name and its position in the split;
    labels and probabilities are the label rank's. `outside` counts the examples left out (no label-rank id)."""

    label_rank: str
    truth: dict[str, np.ndarray]
    heads: dict[str, np.ndarray]
    file_names: list[str]
    positions: np.ndarray
    outside: int = 0

    @property
    def labels(self) -> np.ndarray:
        return self.truth[self.label_rank]

    @property
    def probabilities(self) -> np.ndarray:
        return self.heads[self.label_rank]


def run_config(model_dir: str) -> config_lib.Config:
    """The run's own configuration, read back from its flags.txt."""
    flagfile = RunFiles(pathlib.Path(model_dir).expanduser()).flagfile
    if not flagfile.is_file():
        raise trained_model.RunNotFoundError(f"{flagfile} not found: {model_dir} holds no run of trainer.main")
    return config_lib.parse([f"--flagfile={flagfile}"])


def evaluation_inputs(model_dir: str, predictor: predictors.Predictor, data_dir: str = "",
                      batch_size: int = 32) -> pipelines.InputConfig:
    """The evaluation view (trainer.training.inputs.evaluation_view, as train.run's final evaluation reads it) of the
    run's dataset at the model's input size, with the labels at every rank ({rank: ids})."""
    run = run_config(model_dir)
    return dataclasses.replace(inputs.evaluation_view(inputs.input_config(run)), image_size=predictor.input_size,
                               batch_size=batch_size, heads=labels.RANKS,
                               data_dir=str(pathlib.Path(data_dir or run.data_dir).expanduser()))


def predict_split(predictor: predictors.Predictor, cfg: pipelines.InputConfig, split: str,
                  tta: tuple[str, ...] = ()) -> SplitPredictions:
    """Every head's softmax rows of every example of the split (averaged over the TTA views), with its ids at
    every rank and its file name; examples without an id at the label rank (outside the dataset's taxonomy, -1:
    see the build report) sit out and are counted."""
    dataset = evaluation_batches(cfg, split)
    modes = [mode for mode in TTA_MODES if mode in tta]
    views = (tf.function(lambda images: tta_views(images, modes, predictor.input_size), reduce_retracing=True)
             if modes else lambda images: [images])

    def heads(images):
        answers = [predictor.probabilities(view) for view in views(images)]
        return {head: np.mean([answer[head] for answer in answers], axis=0) for head in predictor.label_names}

    batches = [(heads(images), ids, names)
               for images, ids, names in tqdm.tqdm(dataset.as_numpy_iterator(), desc=f"Predicting {split}",
                                                   total=batch_count(cfg, split), unit=" batches", disable=None)]
    if not batches:
        raise SplitError(f"split {split} of {cfg.dataset_config} is empty: choose another --split")
    probabilities, ids, names = zip(*batches)
    truth = {rank: np.concatenate([batch[rank] for batch in ids]).astype(np.int64) for rank in ids[0]}
    placed = truth[predictor.label_rank] >= 0
    if not placed.any():
        raise SplitError(f"split {split} of {cfg.dataset_config}: no image has a {predictor.label_rank} "
                              "(outside the dataset's taxonomy, see the build report): choose another --split")
    return SplitPredictions(
        predictor.label_rank, {rank: rows[placed] for rank, rows in truth.items()},
        {head: np.concatenate([batch[head] for batch in probabilities])[placed] for head in predictor.label_names},
        [name.decode() for name, keep in zip(np.concatenate(names), placed) if keep], np.flatnonzero(placed),
        int(np.sum(~placed)))


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
        raise SplitError(f"--split={split}: not a split of {cfg.dataset_config} ({error}); use train, "
                         "validation, test or split arithmetic such as train+validation") from None


def batch_count(cfg: pipelines.InputConfig, split: str) -> int | None:
    """Batches of the split at cfg's batch size (None when the split is arithmetic TFDS cannot count)."""
    examples = pipelines.dataset_info(cfg).num_examples.get(split)
    return None if examples is None else math.ceil(examples / cfg.batch_size)
