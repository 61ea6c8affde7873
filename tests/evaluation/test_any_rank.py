"""Evaluate, predict and serving at any label rank and with hierarchical heads: a species run and a run with
phylum, order and family heads trained on the tiny dataset; tree-consistent answers; the roll-up through the
run's calibration.json, written by train.run or crafted here."""

import csv
import json
import pathlib
import shutil

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tests.evaluation.common import GOOD_FILES, pattern
from tfds_rarespecies import labels
from trainer.evaluation import evaluate, reports
from trainer.numbers import calibration, rollup
from trainer.serving import predict, savedmodel, split_predictions, trained_model
from trainer.training import calibration_file
from trainer.training.run_dir import RunFiles

SPECIES_PHYLUM = labels.ancestors("species")["phylum"].to_dict()


def _csv(path: pathlib.Path) -> list[dict]:
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


def test_a_species_run_loads_and_serves_species(species_run):
    trained = trained_model.load_trained(species_run)
    assert trained.label_rank == "species" and trained.names == labels.names("species")
    answers = savedmodel.ServingModel(trained, top_k=3).classify_images(np.stack([pattern(50, 70, 0)]))
    names = [name.decode() for name in answers["names"].numpy()[0]]
    assert set(names) <= set(labels.names("species")) and len(names) == 3
    assert [phylum.decode() for phylum in answers["phyla"].numpy()[0]] == [SPECIES_PHYLUM[name] for name in names]


def test_evaluate_a_species_run_reports_species_and_every_rank_above(species_run, split_sizes):
    report = evaluate.evaluate(evaluate.EvaluationConfig(species_run, split="test", resamples=20))
    out_dir = pathlib.Path(species_run) / "eval" / "test"
    written = json.loads((out_dir / reports.METRICS_JSON).read_text())
    assert written["label_rank"] == "species" and written["examples"] == split_sizes["test"]
    assert written["bootstrap"]["resampling"] == "within family"
    assert list(written["ranks"]) == ["phylum", "class", "order", "family", "genus"]
    assert written["lca_root_height"] == 6 and "heads" not in written
    per_class = pd.read_csv(out_dir / reports.PER_CLASS_CSV)
    assert list(per_class.columns[:2]) == ["species", "phylum"]
    assert set(per_class["species"]) <= set(labels.names("species"))
    assert (per_class["phylum"] == per_class["species"].map(SPECIES_PHYLUM)).all()
    assert "species labels" in reports.format_summary(report)
    results = json.loads(RunFiles(pathlib.Path(species_run)).metrics.read_text())
    assert written["accuracy"] == pytest.approx(results["test"]["accuracy"], abs=1e-9)


def test_predict_a_species_run_writes_species_columns(species_run, photo_folder, tmp_path):
    output = tmp_path / "species.csv"
    predict.run(predict.PredictSettings(species_run, 3, str(output)), [str(photo_folder)])
    rows = _csv(output)
    assert tuple(rows[0]) == ("file", "rank", "species", "phylum", "probability")
    assert list(dict.fromkeys(row["file"] for row in rows)) == [str(photo_folder / name) for name in GOOD_FILES]
    assert all(SPECIES_PHYLUM[row["species"]] == row["phylum"] for row in rows)


def test_train_run_writes_the_calibration_predict_rolls_up_with(species_run, photo_folder, tmp_path):
    calibrated = calibration_file.read(species_run)
    assert calibrated.ranks == labels.RANKS and set(calibrated.temperatures) == {"species"}
    assert all(np.all(np.diff(calibrated.confidences[rank]) <= 0) for rank in calibrated.ranks)
    assert len(calibrated.correct["species"]) == calibrated.validation["examples"]
    output = tmp_path / "rolled.json"
    predict.run(predict.PredictSettings(species_run, 2, str(output), rollup_precision=0.5), [str(photo_folder)])
    for entry in json.loads(output.read_text()):
        answer = entry["rollup"]
        assert answer is None or (answer["rank"] in labels.RANKS
                                  and answer["name"] in labels.names(answer["rank"]))
        assert list(entry["predictions"][0]) == ["rank", "species", "phylum", "probability"]


def test_hierarchical_heads_are_evaluated_raw_and_consistent(hierarchical_run):
    report = evaluate.evaluate(evaluate.EvaluationConfig(hierarchical_run, split="validation", resamples=20))
    numbers = report.metrics
    assert set(numbers["heads"]) == {"phylum", "order", "family"}
    assert numbers["heads"]["family"]["accuracy"] == pytest.approx(numbers["accuracy"])
    assert list(numbers["consistent"]) == ["phylum", "class", "order", "family"]
    for scores in (*numbers["heads"].values(), *numbers["consistent"].values()):
        assert scores["accuracy_ci95"][0] <= scores["accuracy"] <= scores["accuracy_ci95"][1]
    assert "consistent with the tree" in reports.format_summary(report)


def test_predictions_of_hierarchical_heads_never_leave_the_predicted_order(hierarchical_run, photo_folder,
                                                                          tmp_path):
    trained = trained_model.load_trained(hierarchical_run)
    assert trained.label_rank == "family" and set(trained.label_names) == {"phylum", "order", "family"}
    tree = rollup.label_tree(trained.label_names, trained.taxonomy)
    heads = trained.probabilities(np.stack([pattern(32, 32, seed) for seed in range(64)]))
    ids, confidences = tree.predictions(heads)
    assert (tree.leaf_paths[ids[:, -1]] == ids).all()     # the family's path is the predicted path
    assert (np.diff(confidences, axis=1) <= 1e-9).all()
    output = tmp_path / "predictions.csv"
    predict.run(predict.PredictSettings(hierarchical_run, 1, str(output)), [str(photo_folder)])
    views = np.stack([predict.decode_view(photo_folder / name, trained.input_size) for name in GOOD_FILES])
    ids, _ = tree.predictions(trained.probabilities(views))
    assert [row["family"] for row in _csv(output)] == [trained.names[i] for i in ids[:, -1]]


def _crafted(model_dir: pathlib.Path, family_right: bool, order_right: bool) -> None:
    """A calibration.json at temperature 1 whose validation answers were right (or all wrong) at family and
    order and always right above: thresholds 0 where right, none (inf) where wrong. 40 images at each of three
    confidences: enough answers to show the precision asked (rollup.minimum_answers)."""
    ranks = ("phylum", "class", "order", "family")
    right = {"phylum": True, "class": True, "order": order_right, "family": family_right}
    crafted = calibration.RollupCalibration("family", ranks, {"phylum": 1.0, "family": 1.0},
                                            {rank: np.repeat([0.9, 0.5, 0.0], 40) for rank in ranks},
                                            {rank: np.full(120, right[rank]) for rank in ranks})
    calibration_file.write(model_dir, crafted)


@pytest.mark.parametrize("family_right, order_right, rank", [(True, True, "family"), (False, True, "order"),
                                                             (False, False, "class")])
def test_rollup_answers_at_the_rank_the_crafted_calibration_allows(trained_run, photo_folder, tmp_path,
                                                                   family_right, order_right, rank):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    for name in ("model", "labels", "flagfile"):
        shutil.copy(getattr(RunFiles(pathlib.Path(trained_run)), name), getattr(RunFiles(model_dir), name))
    _crafted(model_dir, family_right, order_right)
    output = tmp_path / "rolled.csv"
    predict.run(predict.PredictSettings(str(model_dir), 2, str(output), rollup_precision=0.95),
                [str(photo_folder / "photo.jpg")])
    rows = _csv(output)
    assert tuple(rows[0])[-3:] == predict.ROLLUP_COLUMNS
    assert {row["rollup_rank"] for row in rows} == {rank}
    expected = labels.ancestors("family").loc[rows[0]["family"]]
    assert rows[0]["rollup_name"] == (rows[0]["family"] if rank == "family" else expected[rank])


def test_rollup_without_calibration_names_the_command_that_writes_it(trained_run, photo_folder, tmp_path):
    model_dir = tmp_path / "old_run"
    model_dir.mkdir()
    for name in ("model", "labels", "flagfile"):
        shutil.copy(getattr(RunFiles(pathlib.Path(trained_run)), name), getattr(RunFiles(model_dir), name))
    refusal = "has no calibration.json; write it with `python -m trainer.evaluate --model_dir=.* --rollup_precision"
    with pytest.raises(calibration_file.CalibrationFileError, match=refusal) as raised:
        predict.run(predict.PredictSettings(str(model_dir), 2, rollup_precision=0.9), [str(photo_folder)])
    assert "\n" not in str(raised.value)
    evaluate.evaluate(evaluate.EvaluationConfig(str(model_dir), split="validation", resamples=10,
                                                rollup_precision=0.9))
    assert calibration_file.read(model_dir).ranks == ("phylum", "class", "order", "family")
    predict.run(predict.PredictSettings(str(model_dir), 2, rollup_precision=0.9), [str(photo_folder / "photo.jpg")])


def test_images_outside_the_taxonomy_at_the_label_rank_sit_out_and_are_counted(species_run, monkeypatch,
                                                                              split_sizes):
    real = split_predictions.evaluation_batches
    trained = trained_model.load_trained(species_run)
    cfg = split_predictions.evaluation_inputs(species_run, trained, batch_size=4)
    whole = split_predictions.predict_split(trained, cfg, "test")

    def first_unplaced(cfg, split):
        def unplace(index, batch):
            images, ids, names = batch
            species = tf.where((index == 0) & (tf.range(tf.shape(ids["species"])[0]) == 0), -1, ids["species"])
            return images, {**ids, "species": species}, names
        return real(cfg, split).enumerate().map(unplace)

    monkeypatch.setattr(split_predictions, "evaluation_batches", first_unplaced)
    placed = split_predictions.predict_split(trained, cfg, "test")
    assert placed.outside == 1 and len(placed.labels) == split_sizes["test"] - 1
    assert placed.positions.tolist() == list(range(1, split_sizes["test"]))
    assert placed.file_names == whole.file_names[1:]
    np.testing.assert_allclose(placed.probabilities, whole.probabilities[1:], atol=1e-6)
