"""Hierarchy-aware soft labels (--soft_labels_beta): the targets, the loss on ids and one-hot rows, its saved
config, and a run trained with them."""

import json

import keras
import numpy as np
import pytest

from trainer.training import objectives
from trainer.training.config import Config

# Labels 0, 1 sister families (height 1), 2 in the same class (2), 3 in another phylum (4).
HEIGHTS = np.array([[0, 1, 2, 4], [1, 0, 2, 4], [2, 2, 0, 4], [4, 4, 4, 0]])


def test_soft_targets_fall_with_the_lca_height():
    targets = objectives.soft_label_targets(HEIGHTS, 2.0)
    scores = np.exp(-2.0 * np.array([0, 1, 2, 4]))
    np.testing.assert_allclose(targets[0], scores / scores.sum(), rtol=1e-6)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    assert targets[0, 1] > targets[0, 2] > targets[0, 3]
    np.testing.assert_allclose(objectives.soft_label_targets(HEIGHTS, 50.0), np.eye(4), atol=1e-12)


def test_the_loss_is_the_crossentropy_against_the_soft_targets_on_ids_and_one_hot_rows():
    loss = objectives.SmoothedCrossentropy(4, soft_labels_beta=2.0, heights=HEIGHTS)
    predicted = np.array([[0.5, 0.3, 0.1, 0.1], [0.1, 0.1, 0.2, 0.6]], "float32")
    ids = np.array([0, 3])
    targets = objectives.soft_label_targets(HEIGHTS, 2.0)[ids]
    expected = -(targets * np.log(predicted)).sum(axis=1).mean()
    assert float(loss(ids, predicted)) == pytest.approx(expected, rel=1e-5)
    assert float(loss(np.eye(4, dtype="float32")[ids], predicted)) == pytest.approx(expected, rel=1e-5)
    plain = objectives.SmoothedCrossentropy(4)
    assert float(plain(ids, predicted)) != pytest.approx(expected, rel=1e-3)
    again = objectives.SmoothedCrossentropy.from_config(json.loads(json.dumps(loss.get_config())))
    assert float(again(ids, predicted)) == pytest.approx(expected, rel=1e-5)


def test_soft_labels_without_heights_are_refused():
    with pytest.raises(ValueError, match="needs the LCA heights"):
        objectives.SmoothedCrossentropy(4, soft_labels_beta=2.0)


def test_every_head_gets_its_own_rank_heights():
    arguments = objectives.compile_arguments("family", 0.5, 0.0, {"order": 2, "family": 4}, False, 2.0,
                                             {"order": np.array([[0, 1], [1, 0]]), "family": HEIGHTS})
    assert arguments["loss"]["family"].heights.tolist() == HEIGHTS.tolist()
    assert arguments["loss"]["order"].heights.tolist() == [[0, 1], [1, 0]]


def test_a_run_with_soft_labels_trains_and_saves(tiny_data_dir, tmp_path):
    from trainer.training import train

    config = Config(data_dir=tiny_data_dir, dataset_config="small_128", model_dir=str(tmp_path / "run"),
                    backbone="baseline_cnn", weights="none", image_size=32, dense_units=0, batch_size=16,
                    phase1_epochs=2, phase1_cached_features=True, phase1_learning_rate=1e-2, phase2_epochs=1,
                    unfreeze_layers=-1, phase2_learning_rate=1e-2, warmup_epochs=0, class_weights="none",
                    heads=("phylum", "family"), aux_loss_weight=0.3, soft_labels_beta=2.0)
    results = train.run(config)
    assert np.isfinite(results["test"]["macro_f1"])
    model = keras.saving.load_model(results["paths"]["model"], compile=False)
    assert set(model.output) == {"phylum", "family"}
    assert "soft_labels_beta=2.0" in (tmp_path / "run" / "flags.txt").read_text()
