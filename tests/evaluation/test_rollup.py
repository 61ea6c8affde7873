"""Tree-consistent predictions, the roll-up rule and the precision thresholds on crafted probabilities."""

import numpy as np
import pandas as pd
import pytest

from trainer.numbers import rollup

# Two orders under one class and phylum; families f1, f2 in o1 and f3 in o2.
ORDERS = ("o1", "o2")
FAMILIES = ("f1", "f2", "f3")
ANCESTORS = pd.DataFrame({"phylum": ["p"] * 3, "class": ["c"] * 3, "order": ["o1", "o1", "o2"]},
                         index=list(FAMILIES))
PATHS = rollup.ancestor_ids(FAMILIES, ANCESTORS, [("p",), ("c",), ORDERS, FAMILIES])
RANKS = ("phylum", "class", "order", "family")


def test_ancestor_ids_index_each_rank_list():
    assert PATHS.tolist() == [[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 2]]
    with pytest.raises(ValueError, match="'o2' is in the taxonomy"):
        rollup.ancestor_ids(FAMILIES, ANCESTORS, [("p",), ("c",), ("o1",), FAMILIES])


def test_consistent_predictions_keep_every_family_inside_its_predicted_order():
    orders = np.array([[0.6, 0.4]])             # the order head prefers o1 ...
    families = np.array([[0.3, 0.2, 0.5]])      # ... the family head f3, which lies in o2
    assert ANCESTORS.loc[FAMILIES[families.argmax()], "order"] != ORDERS[orders.argmax()]
    ids, confidences = rollup.consistent_predictions([None, None, orders, families], PATHS)
    # leaf scores 0.6*0.3, 0.6*0.2, 0.4*0.5 = 0.18, 0.12, 0.20: f3 and its order o2
    assert ids.tolist() == [[0, 0, 1, 2]]
    np.testing.assert_allclose(confidences, [[1.0, 1.0, 0.4, 0.4]])
    listed_otherwise = rollup.consistent_predictions([None, None, orders, families], PATHS[[2, 0, 1]])
    np.testing.assert_array_equal(listed_otherwise[0], ids)
    rng = np.random.default_rng(0)
    many = [None, None, rng.dirichlet([1, 1], 500), rng.dirichlet([1, 1, 1], 500)]
    ids, confidences = rollup.consistent_predictions(many, PATHS)
    assert (PATHS[ids[:, 3], 2] == ids[:, 2]).all()
    assert (np.diff(confidences, axis=1) <= 1e-12).all()


def test_a_label_rank_head_alone_gives_its_sums_to_the_ranks_above():
    marginals = rollup.consistent_probabilities([None, None, None, np.array([[0.3, 0.2, 0.5]])], PATHS)
    np.testing.assert_allclose(marginals[2], [[0.5, 0.5]])
    np.testing.assert_allclose(marginals[3], [[0.3, 0.2, 0.5]])
    np.testing.assert_allclose(rollup.node_probabilities(np.array([[0.3, 0.2, 0.5]]), np.array([0, 0, 1]), 3),
                               [[0.5, 0.5, 0]])


def test_least_risk_answers_a_sister_family_when_the_mass_lies_in_one_order():
    tree = rollup.Tree(RANKS, (("p",), ("c",), ORDERS, FAMILIES), PATHS)
    np.testing.assert_array_equal(tree.lca_heights(), [[0, 1, 2], [1, 0, 2], [2, 2, 0]])
    families = np.array([[0.3, 0.3, 0.4], [0.1, 0.1, 0.8]])
    # expected LCA heights: f1 0.3*1 + 0.4*2 = 1.1, f2 1.1, f3 0.3*2 + 0.3*2 = 1.2: f1 (the first of the tie)
    np.testing.assert_allclose(families @ tree.lca_heights(), [[1.1, 1.1, 1.2], [1.7, 1.7, 0.4]])
    ids, confidences = tree.predictions({"family": families}, "crm")
    assert ids[:, 3].tolist() == [0, 2] and ids[:, 2].tolist() == [0, 1]
    np.testing.assert_allclose(confidences[0], [1.0, 1.0, 0.6, 0.3])
    assert tree.predictions({"family": families})[0][:, 3].tolist() == [2, 2]
    with pytest.raises(ValueError, match="choose one of argmax, crm"):
        tree.predictions({"family": families}, "top_down")


def test_roll_up_answers_at_the_deepest_rank_that_reaches_its_threshold():
    names = ("chordata", "reptilia", "testudines", "cheloniidae")
    thresholds = (0.5, 0.9, 0.8, 0.7)
    assert rollup.roll_up(RANKS, names, (0.99, 0.97, 0.9, 0.6), thresholds) == rollup.RolledUp(
        "order", "testudines", 0.9)
    assert rollup.roll_up(RANKS, names, (0.99, 0.97, 0.9, 0.75), thresholds).rank == "family"
    assert rollup.roll_up(RANKS, names, (0.99, 0.5, 0.5, 0.5), thresholds).name == "chordata"
    assert rollup.roll_up(RANKS, names, (0.4, 0.4, 0.4, 0.4), thresholds) is None
    ranks = rollup.deepest_confident_rank(np.array([[0.99, 0.97, 0.9, 0.6], [0.4] * 4]), thresholds)
    assert ranks.tolist() == [2, -1]


def test_precision_threshold_is_the_smallest_that_reaches_the_target():
    """Each answer counted 20 times: the curve is the five answers', with enough of them to show the target."""
    confidences = np.repeat([0.95, 0.9, 0.8, 0.7, 0.6], 20)
    correct = np.repeat([True, True, True, False, True], 20)
    assert rollup.precision_threshold(confidences, correct, 0.95) == 0.8    # 3/3; 0.7 gives 3/4
    assert rollup.precision_threshold(confidences, correct, 0.8) == 0.6     # 4/5
    assert rollup.precision_threshold(confidences, ~correct, 0.95) == np.inf
    assert rollup.precision_threshold(confidences, np.zeros(100, bool), 0.5) == np.inf
    both = rollup.precision_thresholds(np.column_stack([confidences, confidences]),
                                       np.column_stack([correct, np.ones(100, bool)]), 0.95)
    assert both.tolist() == [0.8, 0.6]


def test_a_precision_is_claimed_only_on_enough_answers():
    """The rule of three: n answers all right show a precision of about 1 - 3/n at best (95% one-sided)."""
    assert [rollup.minimum_answers(p) for p in (0.5, 0.9, 0.95, 0.99)] == [6, 30, 60, 300]
    assert rollup.minimum_answers(1.0) == np.inf
    right = np.ones(59, bool)
    assert rollup.precision_threshold(np.linspace(1, 0.5, 59), right, 0.95) == np.inf  # 59 right: not enough
    assert rollup.precision_threshold(np.linspace(1, 0.5, 60), np.ones(60, bool), 0.95) == 0.5
    confidences, right = np.linspace(1, 0, 100), np.arange(100) < 40  # the 40 surest right, the rest wrong
    assert rollup.precision_threshold(confidences, right, 0.95) == np.inf  # 40/40 cannot show 95%: 41/42 too few
    assert rollup.precision_threshold(confidences, right, 0.9) == confidences[43]  # 40/44 right, 44 >= 30


def test_rollup_outcomes_count_each_image_at_the_rank_it_was_answered_at():
    ids = np.array([[0, 0, 1, 2], [0, 0, 0, 1], [0, 0, 0, 0]])
    truth = np.array([[0, 0, 1, 2], [0, 0, 0, 0], [0, 0, 1, 2]])
    confidences = np.array([[1.0, 1.0, 0.9, 0.9], [1.0, 1.0, 0.9, 0.5], [0.3, 0.3, 0.3, 0.3]])
    got = rollup.rollup_outcomes(ids, confidences, truth, (0.5, 0.5, 0.8, 0.8), RANKS)
    assert got["coverage"] == pytest.approx(2 / 3) and got["precision"] == 1.0
    assert got["answered_at"] == {"phylum": 0, "class": 0, "order": pytest.approx(1 / 3),
                                  "family": pytest.approx(1 / 3)}
    assert got["precision_at"]["family"] == 1.0 and np.isnan(got["precision_at"]["phylum"])
