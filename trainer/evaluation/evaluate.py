"""Evaluates a finished run on any split and writes what a person reads into <model_dir>/eval/<split>/.

    python -m trainer.evaluate --model_dir=runs/incv3 --split=test [--gap] [--tta=flip,crops]
        [--data_dir=DIR] [--batch_size=32] [--resamples=1000] [--backend=litert [--quantize=int8]]

Loads model.keras and labels.json (trainer.serving.load_trained), or with --backend=litert the run's LiteRT
export (trainer/evaluation/predictors.py), reads the split through pipelines' evaluation view (no
augmentation, every example exactly once, in stored order, with its ids at every rank), predicts every head,
and hands the labels and probabilities at the model's label rank (labels.json's first head: family, species,
...) to trainer.reports: metrics.json, per_class.csv (its name column titled by the rank), confusions.csv,
confusion_matrix.png, reliability.png, risk_coverage.png, mistakes.png and mistakes.html (thumbnails in
mistakes/); then prints a one-screen summary. The mistake severity, hierarchical distances and the ranks above
the label rank use the model's tree (its dataset's, copied into the run: taxonomy.tsv); the intervals are BCa,
resampled within family for a label rank below family (genus, species) and within the label otherwise
(metrics.bootstrap_intervals). The headline numbers are the label rank's own head, the ones train.run writes.
Images without an id at the label rank (outside the dataset's taxonomy: see the build report) sit out, counted
in metrics.json's "outside_taxonomy".
A model with several heads adds "heads" (each head's accuracy and macro-F1 against the truth at its rank, with
intervals) and "consistent" (the tree-consistent prediction of rollup.label_tree, at every rank from phylum to
the label rank, and its mistake severity), so the raw head and the consistent answer stand side by side.
The report goes to <model_dir>/eval/<split>/, a LiteRT model's to <model_dir>/eval/<split>_litert_<quantize>/
(so the two can be compared file by file); metrics.json names the backend and the model file. The data_dir and
dataset config are the run's (its flags.txt) unless --data_dir is given.

    python -m trainer.evaluate --model_dir=runs/incv3 --few_shot=1,5          # and the few-shot protocol
    python -m trainer.evaluate --few_shot=1,5 --backbone=mobilenetv2 --weights=imagenet [--output_dir=DIR]

--few_shot adds BioCLIP's few-shot protocol for Rare Species (trainer/evaluation/few_shot.py) on the pooled
embeddings of --few_shot_split: the run's fine-tuned backbone (its metrics.json gains "few_shot"), or, without
--model_dir, --backbone with --weights as trainer.main would start from (few_shot.json in --output_dir).
--rollup_precision=0.95 also predicts validation, fits a temperature per head there and chooses the roll-up's
per-rank thresholds on it (trainer/evaluation/rollup_file.py); metrics.json gains "calibration" and "rollup"
(coverage, precision, where the split's images were answered). A run without calibration.json (trained before
it was written) gets it from that fit, when the backend is keras and no --tta is on (what predict sees).
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
from trainer.evaluation import (embeddings, few_shot, litert, metrics, predictors, reports, rollup, rollup_file,
                                serving)
from trainer.run_dir import RunFiles

TTA_MODES = ("flip", "crops")
ALL_SPLITS = "train+validation+test"  # BioCLIP's few-shot protocol uses the whole set
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
    rollup_precision: float = field(0.0, "Roll-up: per-rank confidence thresholds chosen on validation (after "
                                    "temperature scaling fitted there) so that each rank's precision reaches this, "
                                    "e.g. 0.95, applied to --split; 0 = off.", lower=0.0, upper=1.0)
    few_shot: tuple[str, ...] = field((), "Few-shot accuracy (BioCLIP's Rare Species protocol: nearest centroid, "
                                      f"{few_shot.FOLDS} seeded folds) at these images per species, e.g. 1,5.")
    few_shot_split: str = field(ALL_SPLITS, "Split the few-shot supports and queries come from; a run "
                                "has trained on train, so its embeddings have seen those images.")
    backbone: str = field("", "With --few_shot and no --model_dir: the backbone whose embeddings are judged.",
                          choices=("", *pipelines.BACKBONES))
    weights: str = field("imagenet", "With --backbone: imagenet, none, or a local .weights.h5 path.")
    dataset_config: str = field("", "With --backbone: the dataset config to read; empty = the backbone's own.")
    output_dir: str = field("", "With --backbone: the folder few_shot.json goes to; empty = print only.")


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


def evaluate(config: EvaluationConfig) -> reports.Report | dict:
    """Predicts the split, writes its report into <model_dir>/eval/<split>/ and prints the summary; without
    --model_dir, --few_shot with --backbone: the few-shot results of that backbone (evaluate_backbone)."""
    shots = few_shot_counts(config.few_shot)
    if not config.model_dir:
        if shots and config.backbone:
            return evaluate_backbone(config, shots)
        raise EvaluationError("--model_dir is empty: name the run to evaluate, e.g. --model_dir=runs/incv3 (or "
                              "judge a backbone alone with --few_shot=1,5 --backbone=NAME)")
    if config.backbone:
        raise EvaluationError(f"--backbone={config.backbone} with --model_dir: the run's own backbone is judged; "
                              "drop one of the two")
    unknown = sorted(set(config.tta) - set(TTA_MODES))
    if unknown:
        raise EvaluationError(f"--tta={','.join(config.tta)}: unknown mode {', '.join(unknown)}; use any of "
                              f"{','.join(TTA_MODES)}")
    if shots and config.backend != "keras":
        raise EvaluationError("--few_shot reads the run's backbone from model.keras: use --backend=keras")
    predictor = predictors.open_predictor(config.model_dir, config.backend, config.quantize, config.threads)
    rank = predictor.label_rank
    cfg = evaluation_inputs(config.model_dir, predictor, config.data_dir, config.batch_size)
    info = pipelines.dataset_info(cfg)
    for head, names in predictor.label_names.items():
        if tuple(info.names[head]) != names:
            raise EvaluationError(f"{predictor.source}: the model's {head} names differ from {info.full_name}'s: "
                                  "evaluate on the dataset the run was trained on")
    predictions = predict_split(predictor, cfg, config.split, config.tta)
    extra = {"split": config.split, "dataset": info.full_name, "data_dir": cfg.data_dir,
             "model_dir": config.model_dir, "tta": list(config.tta), "backend": config.backend,
             "model": predictor.source, "outside_taxonomy": predictions.outside}
    if config.gap and config.split != "train":
        train = predict_split(predictor, cfg, "train", config.tta)
        train_metrics = metrics.headline_metrics(train.labels, train.probabilities)
        extra["train"] = train_metrics
        extra["gap"] = metrics.train_gap(train_metrics, metrics.headline_metrics(predictions.labels,
                                                                                 predictions.probabilities))
    strata_rank = stratum_rank(rank)
    strata = predictions.truth[strata_rank]
    tree = rollup.label_tree(predictor.label_names, predictor.taxonomy)
    if len(predictor.label_names) > 1:
        extra.update(several_heads_metrics(predictions, tree, strata, config.resamples, config.seed))
    if config.rollup_precision:
        validation = (predictions if config.split == "validation" else
                      predict_split(predictor, cfg, "validation", config.tta))
        fitted = rollup_file.fit(tree, validation.labels, validation.heads)
        if config.backend == "keras" and not config.tta and rollup_file.read(config.model_dir) is None:
            print(f"calibration written to {rollup_file.write(config.model_dir, fitted)}")
        extra.update(rollup_metrics(fitted, predictions, tree, config.rollup_precision))
    if shots:
        extra["few_shot"] = few_shot_results(embeddings.run_embedder(predictor.model), cfg,
                                             config.few_shot_split, shots, config.seed)
    out_dir = report_dir(config.model_dir, config.split, predictor)
    report = reports.write_report(
        out_dir, predictions.labels, predictions.probabilities, predictor.names, predictor.taxonomy.phylum_of(rank),
        rank=rank, title=f"{info.full_name} {config.split}", file_names=predictions.file_names,
        load_images=lambda indices: images_at(cfg, config.split, predictions.positions[indices]), extra=extra,
        resamples=config.resamples, seed=config.seed, ancestors=predictor.taxonomy.ancestors(rank), strata=strata,
        strata_rank=strata_rank)
    print(reports.format_summary(report, heading=f"{info.full_name} {config.split} -> {out_dir}"))
    return report


def stratum_rank(label_rank: str) -> str:
    """The rank the bootstrap resamples within: family (as the splits are drawn) for labels below it, where
    most labels have one or two test images, the label rank itself otherwise."""
    return "family" if labels.RANKS.index(label_rank) > labels.RANKS.index("family") else label_rank


def several_heads_metrics(predictions: SplitPredictions, tree: rollup.Tree, strata: np.ndarray, resamples: int,
                          seed: int) -> dict:
    """Each head's own accuracy and macro-F1 against the truth at its rank, and the tree-consistent
    prediction's at every rank of the model's tree with its mistake severity (and that severity's floor) at the
    label rank."""
    ids, _ = tree.predictions(predictions.heads)
    heights = tree.lca_heights()
    heads = {head: metrics.rank_scores(predictions.truth[head], rows.argmax(axis=1), strata, resamples, seed)
             for head, rows in predictions.heads.items()}
    consistent = {rank: metrics.rank_scores(predictions.truth[rank], ids[:, column], strata, resamples, seed)
                  for column, rank in enumerate(tree.ranks)}
    return {"heads": {head: scores for head, scores in heads.items() if scores is not None},
            "consistent": {rank: scores for rank, scores in consistent.items() if scores is not None},
            "consistent_mistake_severity": metrics.mistake_severity(predictions.labels, ids[:, -1], heights),
            "consistent_mistake_severity_floor": metrics.mistake_severity_floor(predictions.labels, ids[:, -1],
                                                                                heights)}


def rollup_metrics(fitted: rollup_file.Calibration, evaluated: SplitPredictions, tree: rollup.Tree,
                   target: float) -> dict:
    """The validation fit (temperatures and their NLL) and how the roll-up at `target` precision, with the
    thresholds chosen on validation, answers the evaluated split."""
    scaled = fitted.scaled(evaluated.heads)
    ids, confidences = tree.predictions(scaled)
    return {"calibration": {"temperatures": dict(fitted.temperatures),
                            "validation_nll": fitted.validation["nll"],
                            "validation_nll_scaled": fitted.validation["nll_scaled"],
                            "expected_calibration_error_scaled": metrics.expected_calibration_error(
                                evaluated.labels, scaled[evaluated.label_rank])},
            "rollup": {"target_precision": target,
                       **rollup.rollup_outcomes(ids, confidences, tree.leaf_paths[evaluated.labels],
                                                fitted.thresholds(target), tree.ranks)}}


def few_shot_counts(values: tuple[str, ...]) -> tuple[int, ...]:
    """--few_shot's images per species, each a positive integer."""
    if not all(value.isdigit() and int(value) > 0 for value in values):
        raise EvaluationError(f"--few_shot={','.join(values)}: give positive whole numbers of images per species, "
                              "e.g. --few_shot=1,5")
    return tuple(int(value) for value in values)


def evaluate_backbone(config: EvaluationConfig, shots: tuple[int, ...]) -> dict:
    """Few-shot results of --backbone with --weights (no run), printed and, with --output_dir, written."""
    fields = {"dataset_config": config.dataset_config} if config.dataset_config else {}
    cfg = inputs.evaluation_view(pipelines.InputConfig.for_backbone(
        config.backbone, str(pathlib.Path(config.data_dir).expanduser()) if config.data_dir else None,
        config.batch_size, **fields))
    embedder = embeddings.backbone_embedder(config.backbone, config.weights, cfg.image_size)
    results = {**few_shot_results(embedder, cfg, config.few_shot_split, shots, config.seed),
               "backbone": config.backbone, "weights": config.weights, "dataset": pipelines.dataset_info(cfg).full_name}
    if config.output_dir:
        reports.write_few_shot(pathlib.Path(config.output_dir).expanduser(), results)
    print("\n".join([f"{config.backbone} ({config.weights}) few-shot", *reports.few_shot_lines(results)]))
    return results


def few_shot_results(embedder, cfg: pipelines.InputConfig, split: str, shots: tuple[int, ...], seed: int) -> dict:
    """The few-shot protocol on the embedder's vectors of the split's images, labelled by species (images the
    build has no species for sit out)."""
    by_species = dataclasses.replace(cfg, label_rank="species", heads=())
    vectors, species = embeddings.split_embeddings(embedder, evaluation_batches(by_species, split),
                                                   _batches(cfg, split))
    known = species >= 0
    if not known.any():
        raise EvaluationError(f"split {split} of {cfg.dataset_config} names no species: rebuild the dataset with "
                              "the taxonomy (rare_species_taxonomy.csv) for --few_shot")
    try:
        results = few_shot.few_shot_accuracy(vectors[known], species[known], shots, few_shot.FOLDS, seed)
    except ValueError as error:
        raise EvaluationError(f"--few_shot on split {split}: {error}; choose fewer shots or a larger "
                              "--few_shot_split") from None
    return {"split": split, "images": int(known.sum()), **results}


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
                                                   total=_batches(cfg, split), unit=" batches")]
    if not batches:
        raise EvaluationError(f"split {split} of {cfg.dataset_config} is empty: choose another --split")
    probabilities, ids, names = zip(*batches)
    truth = {rank: np.concatenate([batch[rank] for batch in ids]).astype(np.int64) for rank in ids[0]}
    placed = truth[predictor.label_rank] >= 0
    if not placed.any():
        raise EvaluationError(f"split {split} of {cfg.dataset_config}: no image has a {predictor.label_rank} "
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
        raise EvaluationError(f"--split={split}: not a split of {cfg.dataset_config} ({error}); use train, "
                              "validation, test or split arithmetic such as train+validation") from None


def _batches(cfg: pipelines.InputConfig, split: str) -> int | None:
    examples = pipelines.dataset_info(cfg).num_examples.get(split)
    return None if examples is None else math.ceil(examples / cfg.batch_size)
