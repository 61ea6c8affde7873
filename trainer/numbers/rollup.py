"""Answers across the tree: per-rank probabilities made consistent with the taxonomy, the roll-up to the
deepest rank the model is sure of, and the per-rank thresholds that make "sure" mean a precision.

Ranks are columns, phylum first and the label rank last; `leaf_paths` (leaves, ranks) holds each leaf's label
id at every rank (`ancestor_ids` makes it from the taxonomy). The consistency rule: a leaf's score is the
product of the per-rank probabilities along its root-to-leaf path (a rank without a head contributes 1),
normalised over the leaves; a node's probability is the sum of its leaves' scores, so a parent is never less
probable than its child; the prediction is the best leaf and its ancestors, so no family lies outside its
predicted order. A model with the label-rank head only gets its upper ranks by summing that softmax.

Two decision rules pick the leaf from those scores (DECISIONS): "argmax", the most probable leaf, and "crm",
conditional risk minimisation (Karthik et al., "No Cost Likelihood Manipulation at Test Time for Making Better
Mistakes in Deep Networks", ICLR 2021): the leaf j minimising the expected mistake cost sum_i p(i|x) * h(i, j),
h the LCA height (Tree.lca_heights), so an image torn between sister families is answered with one of them
rather than with a lone leaf elsewhere in the tree. Either way the prediction is the chosen leaf and its
ancestors, and each rank's confidence is that node's probability.

`label_tree` makes the ranks and paths of a model from its dataset's tree (tfds_rarespecies.labels.Taxonomy):
phylum down to the label rank, whose names are the leaves; a head below the label rank (e.g. species beside a
family label) has no place in it.

A leaf module (numpy, pandas, scikit-learn): predict and the training room may import it.
"""

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from trainer.numbers import metrics

_SMALLEST = np.finfo(np.float64).tiny
DECISIONS = ("argmax", "crm")


def ancestor_ids(leaf_names: Sequence[str], ancestors: pd.DataFrame | Mapping[str, Sequence[str]],
                 rank_names: Sequence[Sequence[str]]) -> np.ndarray:
    """(leaves, ranks) label ids: row i is leaf_names[i]'s ancestor at each rank (metrics.taxonomy_paths'
    names), as an id into that rank's label list rank_names[r]; the last list is the leaves' own."""
    paths = metrics.taxonomy_paths(leaf_names, ancestors)
    if paths.shape[1] != len(rank_names):
        raise ValueError(f"{len(rank_names)} label lists for a taxonomy of {paths.shape[1]} ranks: give one list "
                         "per rank from phylum down to the label rank")
    ids = np.empty(paths.shape, dtype=np.int64)
    for rank, names in enumerate(rank_names):
        index = {name: position for position, name in enumerate(names)}
        unknown = sorted(set(paths[:, rank]) - set(index))
        if unknown:
            raise ValueError(f"rank {rank}: {unknown[0]!r} is in the taxonomy but not in that rank's label list")
        ids[:, rank] = [index[name] for name in paths[:, rank]]
    return ids


@dataclasses.dataclass(frozen=True)
class Tree:
    """A model's ranks, phylum down to its label rank, each rank's names (ids index them) and each label's
    path (leaf_paths: label ids per rank)."""

    ranks: tuple[str, ...]
    rank_names: tuple[tuple[str, ...], ...]
    leaf_paths: np.ndarray

    def rank_probabilities(self, heads: Mapping[str, np.ndarray]) -> list[np.ndarray | None]:
        """The heads' softmax rows in the tree's rank order, None for a rank without a head."""
        return [heads.get(rank) for rank in self.ranks]

    def probabilities(self, heads: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """consistent_probabilities of the heads' rows: each rank's (n, labels), the label rank's last."""
        return consistent_probabilities(self.rank_probabilities(heads), self.leaf_paths)

    def lca_heights(self) -> np.ndarray:
        """(labels, labels) LCA heights of the label rank's names in this tree (metrics.lca_heights)."""
        return metrics.lca_heights(self.leaf_paths)

    def predictions(self, heads: Mapping[str, np.ndarray], decision: str = "argmax"
                    ) -> tuple[np.ndarray, np.ndarray]:
        """consistent_predictions of the heads' rows under a rule of DECISIONS: (ids, confidences), each
        (n, ranks)."""
        if decision not in DECISIONS:
            raise ValueError(f"decision {decision!r}: choose one of {', '.join(DECISIONS)}")
        costs = None if decision == "argmax" else self.lca_heights()
        return consistent_predictions(self.rank_probabilities(heads), self.leaf_paths, costs)


def label_tree(label_names: Mapping[str, Sequence[str]], taxonomy) -> Tree:
    """The tree of a model whose label_names (head -> names) list its label rank first, in the taxonomy it
    was trained on (a tfds_rarespecies.labels.Taxonomy, or anything with its ancestors(rank) and names(rank)):
    phylum down to that rank (the ranks above it every label has: taxonomy.ancestors), each rank's ids indexing
    the head's names, or the taxonomy's names where the rank has no head."""
    label_rank = next(iter(label_names))
    ancestors = taxonomy.ancestors(label_rank)
    ranks = (*ancestors.columns, label_rank)
    names = tuple(tuple(label_names.get(rank, taxonomy.names(rank))) for rank in ranks)
    return Tree(ranks, names, ancestor_ids(names[-1], ancestors, names))


def leaf_scores(rank_probabilities: Sequence[np.ndarray | None], leaf_paths: np.ndarray) -> np.ndarray:
    """(n, leaves): the product of each leaf's per-rank probabilities along its path, normalised over the
    leaves (the module's rule); None in rank_probabilities marks a rank without a head."""
    present = [probabilities for probabilities in rank_probabilities if probabilities is not None]
    if len(rank_probabilities) != leaf_paths.shape[1] or not present:
        raise ValueError(f"{len(rank_probabilities)} ranks of probabilities for paths of {leaf_paths.shape[1]} "
                         "ranks, with at least one head: give one entry (or None) per rank")
    log_scores = np.zeros((len(present[0]), len(leaf_paths)))
    for rank, probabilities in enumerate(rank_probabilities):
        if probabilities is not None:
            log_scores += np.log(np.maximum(probabilities, _SMALLEST))[:, leaf_paths[:, rank]]
    leaves = np.exp(log_scores - log_scores.max(axis=1, keepdims=True))
    return leaves / leaves.sum(axis=1, keepdims=True)


def node_probabilities(leaf_probabilities: np.ndarray, leaf_ids: np.ndarray,
                       labels: int | None = None) -> np.ndarray:
    """(n, labels) probabilities of a rank's nodes, each the sum over its leaves (leaf_ids: the node id of each
    leaf column); `labels` defaults to the largest id + 1."""
    return leaf_probabilities @ membership(leaf_ids, int(leaf_ids.max()) + 1 if labels is None else labels)


def membership(leaf_ids: np.ndarray, labels: int) -> np.ndarray:
    """(leaves, labels) float64 one-hot of each leaf's node: leaf scores times it are the nodes' sums."""
    matrix = np.zeros((len(leaf_ids), labels))
    matrix[np.arange(len(leaf_ids)), leaf_ids] = 1.0
    return matrix


def consistent_probabilities(rank_probabilities: Sequence[np.ndarray | None],
                             leaf_paths: np.ndarray) -> list[np.ndarray]:
    """Each rank's (n, labels) probabilities implied by the leaf scores, one per column of leaf_paths."""
    leaves = leaf_scores(rank_probabilities, leaf_paths)
    return [node_probabilities(leaves, leaf_paths[:, rank], None if probabilities is None else
                               probabilities.shape[1])
            for rank, probabilities in enumerate(rank_probabilities)]


def least_risk_leaves(leaf_probabilities: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """(n,) conditional risk minimisation: per row the leaf j minimising sum_i p(i) * costs[i, j] (costs:
    (leaves, leaves), 0 on the diagonal), the first on ties."""
    return np.argmin(leaf_probabilities @ np.asarray(costs, dtype=np.float64), axis=1)


def consistent_predictions(rank_probabilities: Sequence[np.ndarray | None], leaf_paths: np.ndarray,
                           costs: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids, confidences), each (n, ranks): the chosen leaf's path and each node's consistent probability;
    the leaf is the most probable one, or with costs (leaves, leaves) the least risky (least_risk_leaves)."""
    leaves = leaf_scores(rank_probabilities, leaf_paths)
    ids = leaf_paths[leaves.argmax(axis=1) if costs is None else least_risk_leaves(leaves, costs)]
    confidences = np.column_stack([node_probabilities(leaves, leaf_paths[:, rank])[np.arange(len(ids)), ids[:, rank]]
                                   for rank in range(leaf_paths.shape[1])])
    return ids, confidences


def deepest_confident_rank(confidences: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Per image (rows of (n, ranks) confidences), the deepest rank whose confidence reaches its threshold;
    -1 where none does (the model abstains)."""
    reached = np.asarray(confidences) >= np.asarray(thresholds, dtype=np.float64)
    deepest = reached.shape[1] - 1 - np.argmax(reached[:, ::-1], axis=1)
    return np.where(reached.any(axis=1), deepest, -1)


@dataclasses.dataclass(frozen=True)
class RolledUp:
    """The answer at the deepest rank the model is sure of."""

    rank: str
    name: str
    probability: float


def roll_up(ranks: Sequence[str], names: Sequence[str], confidences: Sequence[float],
            thresholds: Sequence[float]) -> RolledUp | None:
    """One image's answer: of its consistent path (a name and confidence per rank, phylum first), the deepest
    rank whose confidence reaches that rank's threshold; None when no rank does."""
    rank = int(deepest_confident_rank(np.asarray([confidences], dtype=np.float64), thresholds)[0])
    return None if rank < 0 else RolledUp(ranks[rank], names[rank], float(confidences[rank]))


def rollup_outcomes(ids: np.ndarray, confidences: np.ndarray, truth: np.ndarray, thresholds: Sequence[float],
                    ranks: Sequence[str]) -> dict:
    """How the roll-up answers a split: (n, ranks) consistent predictions and their confidences, the true ids
    at every rank and the per-rank thresholds in; the share answered at all (coverage), their precision at
    the rank each was answered at, and both per rank."""
    deepest = deepest_confident_rank(confidences, thresholds)
    answered = deepest >= 0
    right = ids[np.arange(len(ids)), deepest] == truth[np.arange(len(ids)), deepest]
    at = {rank: deepest == index for index, rank in enumerate(ranks)}
    return {"thresholds": {rank: float(value) if np.isfinite(value) else None  # None: the rank is never answered
                           for rank, value in zip(ranks, thresholds)},
            "coverage": float(answered.mean()),
            "precision": float(right[answered].mean()) if answered.any() else float("nan"),
            "answered_at": {rank: float(chosen.mean()) for rank, chosen in at.items()},
            "precision_at": {rank: float(right[chosen].mean()) if chosen.any() else float("nan")
                             for rank, chosen in at.items()}}


def minimum_answers(target: float) -> int:
    """The fewest answers that can show a precision of `target`: with n answers all right, the one-sided 95%
    lower bound on precision is about 1 - 3/n (the rule of three), so fewer than 3 / (1 - target) answers
    cannot tell `target` from chance luck, and 100% can never be shown."""
    return math.inf if target >= 1 else math.ceil(3 / (1 - target) - 1e-9)


def precision_threshold(confidences: np.ndarray, correct: np.ndarray, target: float) -> float:
    """The smallest confidence threshold at which the answers at or above it are right at least `target` of
    the time and are at least minimum_answers(target) (inf when none is: the rank is never answered)."""
    correct = np.asarray(correct, dtype=bool)
    if not correct.any():
        return float("inf")
    precision, _, thresholds = skm.precision_recall_curve(correct, confidences)
    answered = len(confidences) - np.searchsorted(np.sort(confidences), thresholds, side="left")
    reaching = thresholds[(precision[:-1] >= target) & (answered >= minimum_answers(target))]
    return float(reaching.min()) if len(reaching) else float("inf")


def precision_thresholds(confidences: np.ndarray, correct: np.ndarray, target: float) -> np.ndarray:
    """precision_threshold per rank, from (n, ranks) validation confidences and correctness at each rank."""
    return np.array([precision_threshold(confidences[:, rank], correct[:, rank], target)
                     for rank in range(confidences.shape[1])])
