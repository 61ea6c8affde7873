"""The few-shot protocol on embeddings whose answer is known by construction."""

import numpy as np
import pytest

from trainer.evaluation import few_shot


def _species(count: int = 40, per_species: int = 30, dimensions: int = 64):
    labels = np.repeat(np.arange(count), per_species)
    return labels, np.random.default_rng(0).normal(size=(len(labels), dimensions))


def test_separable_embeddings_give_perfect_five_shot_accuracy():
    labels, noise = _species()
    directions = np.random.default_rng(1).normal(size=(40, 64)) * 10
    embeddings = directions[labels] + noise + 50.0  # an offset the centring removes
    got = few_shot.few_shot_accuracy(embeddings, labels)
    assert got["5_shot"]["mean"] == 1.0 and got["5_shot"]["folds"] == [1.0] * 5
    assert got["1_shot"]["mean"] > 0.95 and got["1_shot"]["labels"] == 40


def test_random_embeddings_are_near_chance_and_folds_differ():
    labels, noise = _species()
    got = few_shot.few_shot_accuracy(noise, labels)
    for k in ("1_shot", "5_shot"):
        assert got[k]["mean"] == pytest.approx(got[k]["chance"], abs=0.02) and got[k]["chance"] == 1 / 40
    assert got["5_shot"]["std"] > 0 and len(set(got["5_shot"]["folds"])) > 1
    assert few_shot.few_shot_accuracy(noise, labels) == got


def test_labels_without_queries_sit_out_and_none_left_is_one_line():
    labels = np.array([0, 0, 0, 1])
    embeddings = np.array([[1.0, 0], [1.1, 0], [0.9, 0], [0, 1.0]])
    assert few_shot.nearest_centroid_accuracy(embeddings, labels, 1, seed=0) == 1.0
    with pytest.raises(ValueError, match="no label has more than 5 images"):
        few_shot.nearest_centroid_accuracy(embeddings, labels, 5, seed=0)
