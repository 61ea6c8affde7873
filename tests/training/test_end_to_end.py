"""`train.run` end to end on the tiny generated dataset (a few learnable families, 16/2/2 images each)."""

import dataclasses
import json
import pathlib

import keras
import numpy as np
import pandas as pd
import pytest

import pipelines  # registers the classes model.keras files written before 2026-12-06 name
from tfds_rarespecies import labels
from trainer.evaluation import evaluate
from trainer.serving import trained_model
from trainer.training import calibration_file, inputs, train
from trainer.training import config as config_lib
from trainer.training.config import Config, ConfigError


def tiny_config(data_dir, model_dir, **changes) -> Config:
    """The baseline CNN from scratch at 32 px in small batches: seconds per run on two CPU cores. Epochs of
    two passes give BatchNormalization's moving statistics, which validation uses, time to follow the training
    batches; patience spans the whole phase, so the epoch counts below are exact."""
    base = Config(data_dir=data_dir, model_dir=str(model_dir), dataset_config="small_128", backbone="baseline_cnn",
                  image_size=32, weights="none", batch_size=8, steps_per_epoch=12, phase1_epochs=1,
                  phase1_learning_rate=3e-3, phase2_epochs=8, phase2_learning_rate=3e-3, unfreeze_layers=-1,
                  warmup_epochs=0, early_stopping_patience=10, seed=1, tensorboard_images=False)
    return dataclasses.replace(base, **changes)


@pytest.fixture(scope="module")
def trained(tiny_data_dir, tmp_path_factory):
    """One full run shared by the tests below: (config, results, what the epoch hook reported)."""
    config = tiny_config(tiny_data_dir, tmp_path_factory.mktemp("run"))
    reported = []
    results = train.run(config, on_epoch_end=lambda epoch, f1: reported.append((epoch, f1)))
    return config, results, reported


def test_run_writes_every_artifact(trained):
    config, results, _ = trained
    paths = {name: pathlib.Path(path) for name, path in results["paths"].items()}
    assert all(path.exists() for path in paths.values())
    assert json.loads(paths["metrics"].read_text())["test"] == results["test"]
    assert json.loads(paths["labels"].read_text()) == {"family": list(labels.families())}
    for phase, epochs in (("phase1", 1), ("phase2", 8)):
        log = pd.read_csv(paths["model_dir"] / "logs" / f"{phase}.csv")
        assert list(log["epoch"]) == list(range(epochs)) and "val_macro_f1" in log
        assert results["phases"][phase]["epochs"] == epochs


def test_metrics_are_in_range_and_the_model_learns(trained):
    _, results, reported = trained
    for split in ("validation", "test"):
        for name in ("accuracy", "top5_accuracy", "macro_auc", "macro_f1"):
            assert 0.0 <= results[split][name] <= 1.0
    assert results["best_val_macro_f1"] > 0.6  # 3 or 4 families: chance is about 0.3
    assert results["validation"]["macro_f1"] == pytest.approx(results["best_val_macro_f1"], abs=1e-6)
    assert [epoch for epoch, _ in reported] == list(range(1, 10))
    assert max(f1 for _, f1 in reported) == pytest.approx(results["best_val_macro_f1"])
    assert results["label_rank"] == "family" and set(results["test_f1_per_family"]) <= set(labels.families())


def test_saved_model_takes_raw_images_and_scores_like_the_trained_one(trained):
    config, results, _ = trained
    model = keras.saving.load_model(results["paths"]["model"])
    raw = pipelines.InputConfig(data_dir=config.data_dir, dataset_config=config.dataset, backbone=config.backbone,
                                image_size=config.input_size, batch_size=16, augment_on_device=True)
    images, ids = zip(*pipelines.make_dataset(raw, "validation", training=False).as_numpy_iterator())
    predicted = model.predict(np.concatenate(images), verbose=0)["family"].argmax(1)
    assert np.mean(predicted == np.concatenate(ids)) == pytest.approx(results["validation"]["accuracy"])


def test_saved_flagfile_reproduces_the_config(trained):
    """Field for field, but the weight of heads the run does not have: a one-head run records 0.0 (the weight
    it trains with), whatever the default."""
    config, results, _ = trained
    assert config_lib.parse([f"--flagfile={results['paths']['flagfile']}"]) == dataclasses.replace(
        config, aux_loss_weight=0.0)


def test_rerunning_a_finished_run_skips_its_phases(trained, capsys):
    config, results, _ = trained
    again = train.run(config)
    assert "phase1: already complete (1 epochs), skipped" in capsys.readouterr().out
    assert again["phases"] == results["phases"] and again["best_val_macro_f1"] == results["best_val_macro_f1"]


def test_model_dir_of_another_run_is_refused(trained):
    config, _, _ = trained
    with pytest.raises(ConfigError, match=r"holds a run with other flags \(now --seed=2\)"):
        train.run(dataclasses.replace(config, seed=2))


def test_cached_phase1_trains_the_head_as_well_as_the_image_path(tiny_data_dir, tmp_path):
    """The frozen backbone makes both paths see the same embeddings; only batch order differs. Compared on the
    last epoch's validation loss: which epoch model selection keeps can differ on a macro-F1 tie."""
    losses = {}
    for cached in (False, True):
        config = tiny_config(tiny_data_dir, tmp_path / str(cached), phase1_cached_features=cached,
                             phase1_epochs=6, phase2_epochs=0, pool_dropout=0.0, dense_dropout=0.0,
                             early_stopping_patience=6)
        train.run(config)
        log = pd.read_csv(tmp_path / str(cached) / "logs" / "phase1.csv")
        assert len(log) == 6
        losses[cached] = log["val_loss"].iloc[-1]
    assert losses[True] == pytest.approx(losses[False], rel=0.05)
    assert losses[True] < pd.read_csv(tmp_path / "True" / "logs" / "phase1.csv")["val_loss"].iloc[0]
    assert list((tmp_path / "True" / "features").glob("*.npz"))


def test_phylum_head_and_oversampling_phase(tiny_data_dir, tmp_path):
    config = tiny_config(tiny_data_dir, tmp_path, phase1_epochs=0, phase2_epochs=2, heads=("phylum", "family"),
                         aux_loss_weight=0.3, oversample_f1_threshold=1.01, oversample_epochs=1,
                         steps_per_epoch=3)
    results = train.run(config)
    families = json.loads((tmp_path / "logs" / "oversample.labels.json").read_text())
    counts = pipelines.label_counts(inputs.input_config(config), "validation")
    assert families == sorted(name for name, count in zip(labels.families(), counts) if count)  # all under F1 1.01
    assert results["phases"]["oversample"]["epochs"] == 1
    assert set(results["test"]) == {"accuracy", "macro_f1", "top5_accuracy", "macro_auc"}
    assert "val_phylum_loss" in pd.read_csv(tmp_path / "logs" / "phase2.csv")
    assert json.loads((tmp_path / "labels.json").read_text())["phylum"] == list(labels.phyla())


def test_train_and_evaluate_report_the_same_numbers_for_one_model(trained):
    """One metric definition: the test figures train.run writes into metrics.json are the ones
    trainer.evaluate writes into eval/test/metrics.json for the saved model."""
    _, results, _ = trained
    report = evaluate.evaluate(evaluate.EvaluationConfig(results["paths"]["model_dir"], split="test",
                                                         resamples=10))
    for name, value in results["test"].items():
        assert report.metrics[name] == pytest.approx(value, abs=1e-9), name


@pytest.mark.parametrize("rank", ["species", "order"])
def test_training_at_another_rank_names_that_rank_end_to_end(tiny_data_dir, tmp_path, rank):
    """Labels, sampling, the feature cache, model selection and the final evaluation at --label_rank."""
    config = tiny_config(tiny_data_dir, tmp_path, label_rank=rank, phase1_epochs=1, phase2_epochs=1,
                         sampling_temperature=0.5, steps_per_epoch=3)
    results = train.run(config)
    assert list(json.loads((tmp_path / "labels.json").read_text())) == [rank]
    assert json.loads((tmp_path / "labels.json").read_text())[rank] == list(labels.names(rank))
    assert results["label_rank"] == rank and set(results[f"test_f1_per_{rank}"]) <= set(labels.names(rank))
    cfg = inputs.input_config(config)
    counts = pipelines.label_counts(cfg, "test")  # every test image placed at the rank
    assert len(counts) == len(labels.names(rank)) and counts.sum() == pipelines.dataset_info(cfg).num_examples["test"]
    assert 0 <= results["test"]["accuracy"] <= 1 and "val_macro_f1" in pd.read_csv(tmp_path / "logs" / "phase2.csv")
    trained = trained_model.load_trained(tmp_path)
    assert trained.label_rank == rank and trained.names == labels.names(rank)
    calibrated = calibration_file.read(tmp_path)
    assert calibrated.ranks == labels.RANKS[:labels.RANKS.index(rank) + 1] and set(calibrated.temperatures) == {rank}


def test_hierarchical_heads_train_together_and_select_on_the_label_rank(tiny_data_dir, tmp_path):
    config = tiny_config(tiny_data_dir, tmp_path, heads=("order", "family", "species"), aux_loss_weight=0.5,
                         phase1_epochs=1, phase1_cached_features=True, phase2_epochs=1, steps_per_epoch=3)
    results = train.run(config)
    assert list(json.loads((tmp_path / "labels.json").read_text())) == ["family", "order", "species"]
    for phase in ("phase1", "phase2"):
        log = pd.read_csv(tmp_path / "logs" / f"{phase}.csv")
        assert {"val_family_macro_f1", "val_order_loss", "val_species_loss"} <= set(log.columns)
    trained = trained_model.load_trained(tmp_path)
    assert {head: rows.shape[1] for head, rows in trained.probabilities(np.zeros((1, 32, 32, 3))).items()} == {
        rank: len(labels.names(rank)) for rank in ("order", "family", "species")}
    assert results["best_val_macro_f1"] == pytest.approx(results["validation"]["macro_f1"], abs=1e-6)
    assert set(calibration_file.read(tmp_path).temperatures) == {"order", "family"}  # species lies below the tree
    report = evaluate.evaluate(evaluate.EvaluationConfig(str(tmp_path), split="test", resamples=10))
    assert set(report.metrics["heads"]) == {"order", "family", "species"}
    assert list(report.metrics["consistent"]) == ["phylum", "class", "order", "family"]
    assert report.metrics["accuracy"] == pytest.approx(results["test"]["accuracy"], abs=1e-9)
