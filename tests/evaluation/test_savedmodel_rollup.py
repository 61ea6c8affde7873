"""The exported SavedModel's tree-consistent answer and roll-up (savedmodel_rollup.py): the TF ops against
rollup.py's numpy on crafted probabilities, and an export of a trained run against trainer.predict on the same
photos."""

import json
import pathlib
import shutil

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from tests.evaluation.common import pattern
from trainer.numbers import calibration, rollup
from trainer.serving import export, predict, predictors, savedmodel_rollup, trained_model
from trainer.training import calibration_file, run_dir
from trainer.training.run_dir import RunFiles

# Two phyla; orders o1, o2 in p1 and o3 in p2; families f1, f2 in o1, f3 in o2, f4, f5 in o3.
FAMILIES = ("f1", "f2", "f3", "f4", "f5")
ANCESTORS = pd.DataFrame({"phylum": ["p1", "p1", "p1", "p2", "p2"], "order": ["o1", "o1", "o2", "o3", "o3"]},
                         index=list(FAMILIES))
NAMES = (("p1", "p2"), ("o1", "o2", "o3"), FAMILIES)
TREE = rollup.Tree(("phylum", "order", "family"), NAMES, rollup.ancestor_ids(FAMILIES, ANCESTORS, NAMES))
PRECISION = 0.6


def _numpy_answers(heads, temperatures, thresholds):
    """predict's arithmetic: the consistent path of the raw heads, and the roll-up of the scaled ones."""
    ids, confidences = TREE.predictions(heads)
    scaled = {head: calibration.scaled_probabilities(calibration.as_logits(rows), temperatures[head])
              for head, rows in heads.items()}
    rolled = [rollup.roll_up(TREE.ranks, [TREE.rank_names[r][i] for r, i in enumerate(path)], row, thresholds)
              for path, row in zip(*TREE.predictions(scaled))]
    return ids, confidences, rolled


def test_graph_answers_equal_the_numpy_rule_on_crafted_probabilities():
    rng = np.random.default_rng(0)
    heads = {"order": rng.dirichlet([0.5] * 3, 200), "family": rng.dirichlet([0.5] * 5, 200)}
    temperatures, thresholds = {"order": 2.0, "family": 0.5}, (0.9, 0.8, 0.7)
    outputs = savedmodel_rollup.TreeOutputs(TREE, temperatures, thresholds)(
        {head: tf.constant(rows, tf.float32) for head, rows in heads.items()})
    ids, confidences, rolled = _numpy_answers({h: r.astype(np.float32) for h, r in heads.items()}, temperatures,
                                              thresholds)
    names = [[TREE.rank_names[r][i] for r, i in enumerate(path)] for path in ids]
    assert outputs["consistent_names"].numpy().astype(str).tolist() == names
    np.testing.assert_allclose(outputs["consistent_probabilities"].numpy(), confidences, atol=1e-6)
    got = list(zip(outputs["rollup_rank"].numpy().astype(str), outputs["rollup_name"].numpy().astype(str),
                   outputs["rollup_probability"].numpy()))
    expected = [("", "", 0.0) if answer is None else (answer.rank, answer.name, answer.probability)
                for answer in rolled]
    assert [row[:2] for row in got] == [row[:2] for row in expected]
    np.testing.assert_allclose([row[2] for row in got], [row[2] for row in expected], atol=1e-6)
    # the crafted rows reach every outcome: each rank and no answer at all
    assert {row[0] for row in got} == {"phylum", "order", "family", ""}


def test_without_a_calibration_only_the_consistent_answer_is_returned():
    outputs = savedmodel_rollup.TreeOutputs.of(TREE)({"family": tf.constant([[0.1, 0.2, 0.3, 0.35, 0.05]])})
    assert set(outputs) == {"consistent_names", "consistent_probabilities"}
    assert outputs["consistent_names"].numpy().astype(str).tolist() == [["p2", "o3", "f4"]]
    np.testing.assert_allclose(outputs["consistent_probabilities"].numpy(), [[0.4, 0.4, 0.35]], atol=1e-7)


def _photos(folder):
    """PNG photos of several sizes (lossless: predict's decoder and the export's read the same pixels)."""
    folder.mkdir()
    for seed, (height, width) in enumerate(((90, 120), (64, 40), (33, 33), (50, 70), (40, 40), (80, 60))):
        Image.fromarray(pattern(height, width, seed)).save(folder / f"photo{seed}.png")
    return sorted(folder.iterdir())


def _copy_run(model_dir: str, folder: pathlib.Path) -> RunFiles:
    """The run's model, labels, flags and taxonomy in another folder (no calibration.json)."""
    source, copy = RunFiles(pathlib.Path(model_dir)), RunFiles(folder)
    folder.mkdir()
    for name in ("model", "labels", "flagfile", "taxonomy"):
        if getattr(source, name).exists():
            shutil.copy(getattr(source, name), getattr(copy, name))
    return copy


def _spread_calibration(copy: RunFiles, files) -> None:
    """A calibration.json whose thresholds fall between the photos' calibrated confidences (heads at
    temperature 3), deeper ranks asking more, so the photos roll up to different ranks; a threshold sits
    at the middle of the widest gap, far from every confidence, so rounding cannot flip an answer."""
    trained = trained_model.load_trained(copy.model_dir)
    tree = rollup.label_tree(trained.label_names, trained.taxonomy)
    temperatures = {rank: 3.0 for rank in tree.ranks if rank in trained.label_names}
    one = {rank: np.array([1.0]) for rank in tree.ranks}
    scaled = calibration.RollupCalibration(tree.ranks[-1], tree.ranks, temperatures, one, one).scaled(
        trained.probabilities(np.stack([predict.decode_view(file, trained.input_size) for file in files])))
    _, confidences = tree.predictions(scaled)
    thresholds = {}
    for depth, rank in enumerate(tree.ranks):
        values = np.sort(confidences[:, depth])
        gaps = range(depth, min(depth + 3, len(values) - 1))  # deeper ranks leave fewer photos above
        widest = max(gaps, key=lambda i: values[i + 1] - values[i])
        thresholds[rank] = np.full(100, (values[widest] + values[widest + 1]) / 2)  # 100: enough answers
    calibration_file.write(copy.model_dir, calibration.RollupCalibration(
        tree.ranks[-1], tree.ranks, temperatures, thresholds, {rank: np.ones(100, bool) for rank in tree.ranks}))


def test_export_rolls_up_in_the_graph_as_predict_does(hierarchical_run, tmp_path, capsys):
    files = _photos(tmp_path / "photos")
    copy = _copy_run(hierarchical_run, tmp_path / "run")
    _spread_calibration(copy, files)
    path = export.export(export.ExportSettings(str(copy.model_dir), export_dir=str(tmp_path / "saved_model"),
                                               rollup_precision=PRECISION))
    capsys.readouterr()
    predictor = predictors.open_predictor(str(copy.model_dir), "keras")
    calibrated = calibration_file.read(copy.model_dir)
    answering = predict.Answering.of(predictor, calibrated, PRECISION)
    predictions, _ = predict.predict_files(predictor, files, answering=answering)
    assert len({None if p.rolled is None else p.rolled.rank for p in predictions}) >= 2
    loaded = tf.saved_model.load(str(path))
    outputs = loaded.signatures["serving_default"](images=tf.constant([file.read_bytes() for file in files]))
    for index, prediction in enumerate(predictions):
        answer = prediction.rolled
        assert outputs["rollup_rank"][index].numpy().decode() == ("" if answer is None else answer.rank)
        assert outputs["rollup_name"][index].numpy().decode() == ("" if answer is None else answer.name)
        assert abs(float(outputs["rollup_probability"][index]) - (0.0 if answer is None else answer.probability)
                   ) < 1e-5
        assert outputs["consistent_names"][index, -1].numpy().decode() == prediction.names[0]
        assert abs(float(outputs["consistent_probabilities"][index, -1]) - prediction.probabilities[0]) < 1e-5
    metadata = json.loads((path / export.METADATA_NAME).read_text())
    assert metadata["ranks"] == list(answering.tree.ranks) and metadata["rollup"]["precision"] == PRECISION
    assert [metadata["rollup"]["thresholds"][rank] for rank in answering.tree.ranks] == pytest.approx(
        calibrated.thresholds(PRECISION).tolist())


def test_export_asked_to_roll_up_without_a_calibration_is_one_line(hierarchical_run, tmp_path):
    copy = _copy_run(hierarchical_run, tmp_path / "run")
    with pytest.raises(calibration_file.CalibrationFileError, match="no calibration.json") as raised:
        export.export(export.ExportSettings(str(copy.model_dir), rollup_precision=PRECISION))
    assert "\n" not in str(raised.value) and not (copy.model_dir / run_dir.SAVED_MODEL_DIR).exists()


def test_litert_metadata_carries_the_tree_and_the_rollup_thresholds(hierarchical_run, tmp_path, capsys):
    """A device answers like predict from the .tflite's heads and its metadata alone: the consistent leaf
    and the roll-up rebuilt from "tree" equal predict's on the same photos."""
    files = _photos(tmp_path / "photos")
    copy = _copy_run(hierarchical_run, tmp_path / "run")
    _spread_calibration(copy, files)
    export.export(export.ExportSettings(str(copy.model_dir), format="litert", rollup_precision=PRECISION,
                                        min_agreement=0.0))
    capsys.readouterr()
    litert_model = predictors.open_predictor(str(copy.model_dir), "litert")
    described = litert_model.metadata["tree"]
    calibrated = calibration_file.read(copy.model_dir)
    answering = predict.Answering.of(litert_model, calibrated, PRECISION)
    assert described["ranks"] == list(answering.tree.ranks)
    assert np.array_equal(described["leaf_paths"], answering.tree.leaf_paths)
    thresholds = [described["rollup"]["thresholds"][rank] for rank in described["ranks"]]
    assert thresholds == pytest.approx(calibrated.thresholds(PRECISION).tolist())
    tree = rollup.Tree(tuple(described["ranks"]), tuple(map(tuple, described["rank_names"])),
                       np.asarray(described["leaf_paths"]))
    heads = litert_model.probabilities(np.stack([predict.decode_view(file, litert_model.input_size)
                                                 for file in files]))
    temperatures = described["rollup"]["temperatures"]
    scaled = calibration.RollupCalibration(tree.ranks[-1], tree.ranks, temperatures, {}, {}).scaled(
        heads)
    ids, confidences = tree.predictions(scaled)
    on_device = [rollup.roll_up(tree.ranks, [tree.rank_names[r][i] for r, i in enumerate(row)], conf, thresholds)
                 for row, conf in zip(ids, confidences)]
    predictions, _ = predict.predict_files(litert_model, files, answering=answering)
    assert [p.rolled for p in predictions] == on_device
