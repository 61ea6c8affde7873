"""trainer.evaluate end to end on a tiny run trained by the real trainer, and its test-time views."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from trainer import cli
from trainer.evaluation import evaluate, reports
from trainer.numbers import metrics
from trainer.serving import split_predictions, trained_model


def test_evaluate_writes_every_report_file(trained_run, split_sizes, capsys):
    report = evaluate.evaluate(evaluate.EvaluationConfig(trained_run, split="test", gap=True, tta=("flip",),
                                                         resamples=50))
    out_dir = pathlib.Path(trained_run) / "eval" / "test"
    written = json.loads((out_dir / reports.METRICS_JSON).read_text())
    assert written["examples"] == split_sizes["test"] == report.metrics["examples"]
    assert written["split"] == "test" and written["tta"] == ["flip"]
    assert set(written["gap"]) == set(metrics.GAP_METRICS) and set(written["train"]) == set(metrics.GAP_METRICS)
    assert written["accuracy_ci95"][0] <= written["accuracy"] <= written["accuracy_ci95"][1]
    assert written["bootstrap"]["method"] == "BCa" and written["lca_root_height"] == 4
    assert 0 <= written["hierarchical_distance_at_1"] <= written["hierarchical_distance_at_5"] <= 4
    assert (written["mistake_severity"] is None) == (written["errors"] == 0)
    if written["errors"]:
        assert 1 <= written["mistake_severity_floor"] <= written["mistake_severity"]
    assert 0 <= written["aurc"] <= 1 and written["risk_coverage"]["coverage"][-1] == 1.0
    assert pd.read_csv(out_dir / reports.PER_CLASS_CSV)["support"].sum() == split_sizes["test"]
    pd.read_csv(out_dir / reports.CONFUSIONS_CSV)
    for name in (reports.CONFUSION_PNG, reports.RELIABILITY_PNG, reports.RISK_COVERAGE_PNG, reports.MISTAKES_PNG):
        with Image.open(out_dir / name) as image:
            image.verify()
    page = (out_dir / reports.MISTAKES_HTML).read_text()
    sources = [part.split('"', 1)[0] for part in page.split('src="')[1:]]
    assert len(sources) == min(written["errors"], metrics.GALLERY_SIZE)
    assert all((out_dir / source).is_file() for source in sources)
    summary = capsys.readouterr().out
    assert "macro-F1" in summary and str(out_dir) in summary


def test_predictions_cover_the_split_once_with_the_gallery_images_in_order(trained_run, split_sizes):
    trained = trained_model.load_trained(trained_run)
    cfg = split_predictions.evaluation_inputs(trained_run, trained, batch_size=5)
    predictions = split_predictions.predict_split(trained, cfg, "train")
    assert len(predictions.labels) == len(set(predictions.file_names)) == split_sizes["train"]
    np.testing.assert_allclose(predictions.probabilities.sum(axis=1), 1.0, rtol=1e-5)
    indices = np.array([7, 0, split_sizes["train"] - 1])
    images = split_predictions.images_at(cfg, "train", indices)
    assert [image.shape for image in images] == [(32, 32, 3)] * 3 and images[0].dtype == np.uint8
    again = trained.probabilities(np.stack(images))[trained.label_rank]
    np.testing.assert_allclose(again, predictions.probabilities[indices], atol=1e-5)


def test_tta_views_are_the_image_its_crops_and_their_mirrors():
    images = tf.random.uniform((2, 16, 16, 3), 0, 255)
    assert len(split_predictions.tta_views(images, [], 16)) == 1
    flipped = split_predictions.tta_views(images, ["flip"], 16)
    np.testing.assert_array_equal(flipped[1].numpy(), images.numpy()[:, :, ::-1])
    both = split_predictions.tta_views(images, ["flip", "crops"], 16)
    assert len(both) == 12 and all(view.shape == (2, 16, 16, 3) for view in both)
    flat = split_predictions.tta_views(tf.fill((1, 16, 16, 3), 100.0), ["crops"], 16)
    np.testing.assert_allclose(np.stack(flat), 100.0, atol=1e-3)


def test_evaluate_refuses_with_one_line(trained_run, tmp_path):
    for config, error, words in (
            (evaluate.EvaluationConfig(str(tmp_path)), trained_model.RunNotFoundError, "model.keras not found"),
            (evaluate.EvaluationConfig(trained_run, tta=("rotate",)), evaluate.EvaluationError, "unknown mode"),
            (evaluate.EvaluationConfig(trained_run, split="holdout"), split_predictions.SplitError, "--split=holdout")):
        with pytest.raises(error, match=words) as raised:
            evaluate.evaluate(config)
        assert "\n" not in str(raised.value)


@pytest.mark.slow
def test_command_line_prints_the_summary(trained_run):
    result = subprocess.run([sys.executable, "-m", "trainer.evaluate", f"--model_dir={trained_run}",
                             "--split=validation", "--resamples=20"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "macro-F1" in result.stdout and "validation" in result.stdout
    assert (pathlib.Path(trained_run) / "eval" / "validation" / reports.METRICS_JSON).is_file()
    missing = subprocess.run([sys.executable, "-m", "trainer.evaluate", "--model_dir=/nonexistent/run"],
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == cli.EXIT_USAGE
    assert missing.stderr.strip().splitlines()[-1].startswith("trainer.evaluate: error: /nonexistent/run")


def test_rollup_and_few_shot_of_a_run_go_into_its_metrics(trained_run, capsys):
    report = evaluate.evaluate(evaluate.EvaluationConfig(trained_run, split="test", resamples=20,
                                                         rollup_precision=0.9, few_shot=("1", "2")))
    calibrated, rolled = report.metrics["calibration"], report.metrics["rollup"]
    assert set(calibrated["temperatures"]) == {"phylum", "family"}
    for head, scaled in calibrated["validation_nll_scaled"].items():
        assert scaled <= calibrated["validation_nll"][head] + 1e-9
    assert list(rolled["answered_at"]) == ["phylum", "class", "order", "family"]
    assert rolled["coverage"] == pytest.approx(sum(rolled["answered_at"].values()))
    assert "roll-up at 90% precision" in capsys.readouterr().out
    results = report.metrics["few_shot"]
    assert results["split"] == evaluate.ALL_SPLITS and results["folds"] == 5
    assert results["1_shot"]["labels"] >= results["2_shot"]["labels"] > 1 and 0 < results["images"] <= 80
    for key in ("1_shot", "2_shot"):
        assert 0 <= results[key]["mean"] <= 1 and len(results[key]["folds"]) == 5


def test_few_shot_of_a_backbone_without_a_run(tiny_data_dir, tmp_path, capsys):
    results = evaluate.evaluate(evaluate.EvaluationConfig(
        few_shot=("1",), backbone="baseline_cnn", weights="none", data_dir=tiny_data_dir,
        dataset_config="small_128", output_dir=str(tmp_path), batch_size=16))
    written = json.loads((tmp_path / reports.FEW_SHOT_JSON).read_text())
    assert written["backbone"] == "baseline_cnn" and written["1_shot"]["mean"] == results["1_shot"]["mean"]
    assert "1-shot" in capsys.readouterr().out
    for config, words in ((evaluate.EvaluationConfig(few_shot=("one",), backbone="baseline_cnn"), "positive whole"),
                          (evaluate.EvaluationConfig(few_shot=("1",)), "--model_dir is empty"),
                          (evaluate.EvaluationConfig(str(tmp_path), backbone="baseline_cnn"), "drop one")):
        with pytest.raises(evaluate.EvaluationError, match=words) as raised:
            evaluate.evaluate(config)
        assert "\n" not in str(raised.value)
