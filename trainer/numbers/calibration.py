"""Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017): one scalar fitted
on the validation split so that softmax(logits / T) states confidences that hold, which the roll-up's
per-rank thresholds and the abstention rule rely on. It divides every logit alike, so no prediction changes.

RollupCalibration is what the roll-up needs at predict time (a run's calibration.json, written by
trainer/training/calibration_file.py): per-head temperatures and each rank's validation confidences with
their correctness, surest first, so a threshold for any target precision is rollup.precision_threshold of them.
A leaf module (numpy, scipy) the training room may import. Models that give probabilities rather than logits
pass `as_logits(probabilities)`: softmax(log p) is p again.
"""

import dataclasses
from collections.abc import Mapping

import numpy as np
from scipy import optimize, special

from trainer.numbers import rollup

TEMPERATURE_BOUNDS = (0.05, 20.0)
_SMALLEST = np.finfo(np.float64).tiny


def as_logits(probabilities: np.ndarray) -> np.ndarray:
    """Logits whose softmax is `probabilities` (zeros kept finite)."""
    return np.log(np.maximum(np.asarray(probabilities, dtype=np.float64), _SMALLEST))


def scaled_probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / temperature), row by row."""
    return special.softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)


def negative_log_likelihood(labels: np.ndarray, logits: np.ndarray, temperature: float = 1.0) -> float:
    """Mean -log softmax(logits / temperature)[label]: the loss temperature scaling minimises."""
    log_probabilities = special.log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)
    return float(-log_probabilities[np.arange(len(labels)), labels].mean())


def fit_temperature(labels: np.ndarray, logits: np.ndarray) -> float:
    """The temperature in TEMPERATURE_BOUNDS minimising the validation NLL (> 1 softens an over-confident
    model, < 1 sharpens a timid one); searched on log T, where the NLL is smooth and unimodal in practice."""
    labels = np.asarray(labels, dtype=np.int64)
    result = optimize.minimize_scalar(lambda log_t: negative_log_likelihood(labels, logits, float(np.exp(log_t))),
                                      bounds=np.log(TEMPERATURE_BOUNDS), method="bounded")
    return float(np.exp(result.x))


@dataclasses.dataclass(frozen=True)
class RollupCalibration:
    """Per-head temperatures and per-rank validation confidences with their correctness (see the module)."""

    label_rank: str
    ranks: tuple[str, ...]
    temperatures: Mapping[str, float]
    confidences: Mapping[str, np.ndarray]
    correct: Mapping[str, np.ndarray]
    validation: Mapping[str, object] = dataclasses.field(default_factory=dict)

    def scaled(self, heads: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The heads' softmax rows at their temperatures (heads outside the tree as they are)."""
        return {head: scaled_probabilities(as_logits(rows), self.temperatures[head])
                if head in self.temperatures else rows for head, rows in heads.items()}

    def thresholds(self, target: float) -> np.ndarray:
        """Per rank, the smallest confidence at which validation's answers there reach `target` precision
        (inf: the rank is never answered)."""
        return np.array([rollup.precision_threshold(self.confidences[rank], self.correct[rank], target)
                         for rank in self.ranks])

    @classmethod
    def from_json(cls, data: Mapping) -> "RollupCalibration":
        """The inverse of to_json; KeyError, TypeError or ValueError on anything else."""
        ranks = tuple(data["ranks"])
        return cls(data["label_rank"], ranks, {head: float(t) for head, t in data["temperatures"].items()},
                   {rank: np.asarray(data["confidences"][rank], dtype=np.float64) for rank in ranks},
                   {rank: np.asarray(data["correct"][rank], dtype=bool) for rank in ranks},
                   data.get("validation", {}))

    def shortfall(self, target: float) -> str:
        """One sentence naming the ranks too few validation images were answered at to show `target` precision
        ("" when none): the roll-up never answers there, rather than claim a precision it could not measure."""
        needed = rollup.minimum_answers(target)
        short = [rank for rank in self.ranks if len(self.confidences[rank]) < needed]
        if not short:
            return ""
        return (f"the calibration holds {len(self.confidences[short[0]])} validation images, and a precision of "
                f"{target:g} shows only on at least {needed} answers at a rank (the rule of three), so the roll-up "
                f"never answers at {', '.join(short)}: calibrate on a larger validation split")

    def to_json(self) -> dict:
        return {"label_rank": self.label_rank, "ranks": list(self.ranks), "temperatures": dict(self.temperatures),
                "validation": dict(self.validation),
                "confidences": {rank: self.confidences[rank].tolist() for rank in self.ranks},
                "correct": {rank: self.correct[rank].astype(bool).tolist() for rank in self.ranks}}


def fit_rollup(tree: rollup.Tree, labels: np.ndarray, heads: Mapping[str, np.ndarray]) -> RollupCalibration:
    """The roll-up calibration of a model (tree: rollup.label_tree of its label names and taxonomy) from validation's
    label-rank ids and every head's softmax rows; images outside the taxonomy (-1) sit out."""
    known = np.asarray(labels) >= 0
    truth = tree.leaf_paths[np.asarray(labels)[known]]
    in_tree = {head: np.asarray(rows, dtype=np.float64)[known] for head, rows in heads.items() if head in tree.ranks}
    temperatures, nll, nll_scaled = {}, {}, {}
    for head, rows in in_tree.items():
        ids, logits = truth[:, tree.ranks.index(head)], as_logits(rows)
        temperatures[head] = fit_temperature(ids, logits)
        nll[head] = negative_log_likelihood(ids, logits)
        nll_scaled[head] = negative_log_likelihood(ids, logits, temperatures[head])
    scaled = {head: scaled_probabilities(as_logits(rows), temperatures[head])
              for head, rows in in_tree.items()}
    ids, confidences = tree.predictions(scaled)
    correct = ids == truth
    order = np.argsort(-confidences, axis=0, kind="stable")
    return RollupCalibration(tree.ranks[-1], tree.ranks, temperatures,
                       {rank: confidences[order[:, r], r] for r, rank in enumerate(tree.ranks)},
                       {rank: correct[order[:, r], r] for r, rank in enumerate(tree.ranks)},
                       {"examples": int(known.sum()), "nll": nll, "nll_scaled": nll_scaled})
