"""Evaluates a finished run on any split and writes what a person reads into <model_dir>/eval/<split>/.

    python -m trainer.evaluate --model_dir=runs/incv3 --split=test [--gap] [--tta=flip,crops]
        [--data_dir=DIR] [--batch_size=32] [--resamples=1000] [--backend=litert [--quantize=int8]]

Loads model.keras and labels.json (trainer.serving.trained_model.load_trained), or with --backend=litert the
run's LiteRT export (trainer/serving/predictors.py), reads the split through pipelines' evaluation view (no
augmentation, every example exactly once, in stored order, with its ids at every rank), predicts every head,
and hands the labels and probabilities at the model's label rank (labels.json's first head: family, species,
...) to reports.write_report: metrics.json, per_class.csv (its name column titled by the rank), confusions.csv,
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
per-rank thresholds on it (trainer/training/calibration_file.py); metrics.json gains "calibration" and "rollup"
(coverage, precision, where the split's images were answered). A run without calibration.json (trained before
it was written) gets it from that fit, when the backend is keras and no --tta is on (what predict sees).
--gap also predicts the train split and adds the train metrics and train-minus-split differences.
--tta averages the probabilities over extra views: flip (mirrored), crops (four corners and the centre, each
CROP_FRACTION of the side, resized back to the input size); a LiteRT model gets each view rounded to the
uint8 pixels it takes.
"""

import dataclasses
import pathlib

import numpy as np

import pipelines
from tfds_rarespecies import labels
from trainer import cli
from trainer.cli import field
from trainer.evaluation import embeddings, few_shot, reports
from trainer.numbers import calibration, metrics, rollup
from trainer.serving import litert, predictors, split_predictions
from trainer.training import calibration_file, inputs, run_dir

ALL_SPLITS = "train+validation+test"  # BioCLIP's few-shot protocol uses the whole set


class EvaluationError(cli.UserError):
    """An evaluation that cannot run; the message is the one line shown to the user."""


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """What to evaluate and how; each field is the flag of the same name (seed: --bootstrap_seed)."""

    model_dir: str = field("", "A finished run of trainer.main (model.keras, labels.json, flags.txt).",
                           group="run and split", path=True)
    split: str = field("test", "Split to evaluate (train, validation, test, or e.g. train+validation).",
                       group="run and split")
    data_dir: str = field("", "TFDS data_dir holding the run's dataset; empty = the run's own (its flags.txt).",
                          group="run and split", path=True)
    batch_size: int = field(32, "Images per prediction batch.", lower=1, group="run and split")
    gap: bool = field(False, "Also evaluate train and report train minus --split.", group="run and split")
    tta: tuple[str, ...] = field((), "Test-time augmentation: any of "
                                  f"{','.join(split_predictions.TTA_MODES)}.", group="run and split")
    resamples: int = field(metrics.BOOTSTRAP_RESAMPLES, "Bootstrap resamples of the 95% intervals.", lower=10,
                           group="report")
    seed: int = field(0, "Seed of the bootstrap resampling.", flag_name="bootstrap_seed", group="report")
    backend: str = predictors.backend_field()
    quantize: str = predictors.quantize_field()
    threads: int = predictors.threads_field()
    rollup_precision: float = field(0.0, "Roll-up: per-rank confidence thresholds chosen on validation (after "
                                    "temperature scaling fitted there) so that each rank's precision reaches this, "
                                    "e.g. 0.95, applied to --split; 0 = off.", lower=0.0, upper=1.0, group="report")
    few_shot: tuple[str, ...] = field((), "Few-shot accuracy (BioCLIP's Rare Species protocol: nearest centroid, "
                                      f"{few_shot.FOLDS} seeded folds) at these images per species, e.g. 1,5.",
                                      group="few-shot")
    few_shot_split: str = field(ALL_SPLITS, "Split the few-shot supports and queries come from; a run "
                                "has trained on train, so its embeddings have seen those images.", group="few-shot")
    backbone: str = field("", "With --few_shot and no --model_dir: the backbone whose embeddings are judged.",
                          choices=("", *pipelines.BACKBONES), group="few-shot")
    weights: str = field("imagenet", "With --backbone: pretrained, imagenet, none, a local .weights.h5 path or "
                                     "keras-hub preset folder.",
                         group="few-shot", path=True)
    dataset_config: str = field("", "With --backbone: the dataset config to read; empty = the backbone's own.",
                                group="few-shot")
    output_dir: str = field("", "With --backbone: the folder few_shot.json goes to; empty = print only.",
                            group="few-shot", path=True)


def evaluate(config: EvaluationConfig) -> reports.Report | dict:
    """Predicts the split, writes its report into <model_dir>/eval/<split>/ and prints the summary; without
    --model_dir, --few_shot with --backbone: the few-shot results of that backbone (evaluate_backbone)."""
    shots = few_shot_counts(config.few_shot)
    if not config.model_dir:
        if shots and config.backbone:
            return evaluate_backbone(config, shots)
        raise EvaluationError("--model_dir is empty: name the run to evaluate, e.g. --model_dir=runs/incv3 (or "
                              "judge a backbone alone with --few_shot=1,5 --backbone=NAME)")
    check_run_flags(config, shots)
    predictor = predictors.open_predictor(config.model_dir, config.backend, config.quantize, config.threads)
    cfg = split_predictions.evaluation_inputs(config.model_dir, predictor, config.data_dir, config.batch_size)
    info = pipelines.dataset_info(cfg)
    check_label_names(predictor, info)
    judged = Judged(config, predictor, cfg, info,
                    split_predictions.predict_split(predictor, cfg, config.split, config.tta))
    extra = {"split": config.split, "dataset": info.full_name, "data_dir": cfg.data_dir,
             "model_dir": config.model_dir, "tta": list(config.tta), "backend": config.backend,
             "model": predictor.source, "outside_taxonomy": judged.predictions.outside,
             **gap_metrics(judged), **tree_metrics(judged)}
    if shots:
        extra["few_shot"] = few_shot_results(embeddings.run_embedder(predictor.model), cfg,
                                             config.few_shot_split, shots, config.seed)
    return write_and_print(judged, extra)


@dataclasses.dataclass(frozen=True)
class Judged:
    """One evaluation's inputs: the flags, the run's predictor, the evaluation view, the dataset and the split's
    predictions."""

    config: EvaluationConfig
    predictor: predictors.Predictor
    cfg: pipelines.InputConfig
    info: pipelines.DatasetInfo
    predictions: split_predictions.SplitPredictions

    @property
    def strata(self) -> np.ndarray:
        return self.predictions.truth[stratum_rank(self.predictor.label_rank)]

    @property
    def tree(self) -> rollup.Tree:
        return rollup.label_tree(self.predictor.label_names, self.predictor.taxonomy)

    def predict(self, split: str) -> split_predictions.SplitPredictions:
        """Another split through the same model and view (the evaluated one is not predicted twice)."""
        if split == self.config.split:
            return self.predictions
        return split_predictions.predict_split(self.predictor, self.cfg, split, self.config.tta)


def check_run_flags(config: EvaluationConfig, shots: tuple[int, ...]) -> None:
    """The flags that make no sense with --model_dir, in one line each."""
    if config.backbone:
        raise EvaluationError(f"--backbone={config.backbone} with --model_dir: the run's own backbone is judged; "
                              "drop one of the two")
    unknown = sorted(set(config.tta) - set(split_predictions.TTA_MODES))
    if unknown:
        raise EvaluationError(f"--tta={','.join(config.tta)}: unknown mode {', '.join(unknown)}; use any of "
                              f"{','.join(split_predictions.TTA_MODES)}")
    if shots and config.backend != "keras":
        raise EvaluationError("--few_shot reads the run's backbone from model.keras: use --backend=keras")


def check_label_names(predictor: predictors.Predictor, info: pipelines.DatasetInfo) -> None:
    for head, names in predictor.label_names.items():
        if tuple(info.names[head]) != names:
            raise EvaluationError(f"{predictor.source}: the model's {head} names differ from {info.full_name}'s: "
                                  "evaluate on the dataset the run was trained on")


def gap_metrics(judged: Judged) -> dict:
    """With --gap, the train split's headline numbers and train minus the evaluated split."""
    if not judged.config.gap or judged.config.split == "train":
        return {}
    train = judged.predict("train")
    train_metrics = metrics.headline_metrics(train.labels, train.probabilities)
    evaluated = metrics.headline_metrics(judged.predictions.labels, judged.predictions.probabilities)
    return {"train": train_metrics, "gap": metrics.train_gap(train_metrics, evaluated)}


def tree_metrics(judged: Judged) -> dict:
    """Several heads: each head and the tree-consistent answer; --rollup_precision: the roll-up fitted on
    validation (and written as the run's calibration.json when it has none and nothing changes the view)."""
    config, tree, figures = judged.config, judged.tree, {}
    if len(judged.predictor.label_names) > 1:
        figures.update(several_heads_metrics(judged.predictions, tree, judged.strata, config.resamples, config.seed))
    if config.rollup_precision:
        validation = judged.predict("validation")
        fitted = calibration.fit_rollup(tree, validation.labels, validation.heads)
        if config.backend == "keras" and not config.tta and calibration_file.read(config.model_dir) is None:
            print(f"calibration written to {calibration_file.write(config.model_dir, fitted)}")
        if fitted.shortfall(config.rollup_precision):
            print(f"note: {fitted.shortfall(config.rollup_precision)}")
        figures.update(rollup_metrics(fitted, judged.predictions, tree, config.rollup_precision))
    return figures


def write_and_print(judged: Judged, extra: dict) -> reports.Report:
    """The report files of the evaluated split, then its one-screen summary."""
    config, predictor, predictions = judged.config, judged.predictor, judged.predictions
    rank = predictor.label_rank
    out_dir = report_dir(config.model_dir, config.split, predictor)
    title = f"{judged.info.full_name} {config.split}"
    report = reports.write_report(
        out_dir, predictions.labels, predictions.probabilities,
        metrics.LabelSpace(predictor.names, predictor.taxonomy.phylum_of(rank), rank,
                           predictor.taxonomy.ancestors(rank)),
        metrics.Resampling(config.resamples, config.seed, judged.strata, stratum_rank(rank)),
        title=title, extra=extra,
        gallery=reports.Gallery(predictions.file_names, lambda indices: split_predictions.images_at(
            judged.cfg, config.split, predictions.positions[indices])))
    print(reports.format_summary(report, heading=f"{title} -> {out_dir}"))
    return report


def stratum_rank(label_rank: str) -> str:
    """The rank the bootstrap resamples within: family (as the splits are drawn) for labels below it, where
    most labels have one or two test images, the label rank itself otherwise."""
    return "family" if labels.RANKS.index(label_rank) > labels.RANKS.index("family") else label_rank


def several_heads_metrics(predictions: split_predictions.SplitPredictions, tree: rollup.Tree, strata: np.ndarray,
                          resamples: int, seed: int) -> dict:
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


def rollup_metrics(fitted: calibration.RollupCalibration, evaluated: split_predictions.SplitPredictions,
                   tree: rollup.Tree, target: float) -> dict:
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
    problem = pipelines.backbones.weights_problem(pipelines.get_backbone(config.backbone), config.weights)
    if problem:
        raise EvaluationError(problem)
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
    vectors, species = embeddings.split_embeddings(embedder, split_predictions.evaluation_batches(by_species, split),
                                                   split_predictions.batch_count(cfg, split))
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
    return pathlib.Path(model_dir).expanduser() / run_dir.EVAL_DIR / name


