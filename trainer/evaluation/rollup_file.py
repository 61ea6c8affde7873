"""<model_dir>/calibration.json: what the roll-up needs at predict time, fitted on the validation split and stored
with the model, so `trainer.predict --rollup_precision=P` chooses its per-rank thresholds for any P without the
dataset.

    {"label_rank": "family", "ranks": ["phylum", "class", "order", "family"],
     "temperatures": {head: T},                       one per head in the tree (calibration.fit_temperature)
     "validation": {"examples": n, "nll": {head: ...}, "nll_scaled": {head: ...}},
     "confidences": {rank: [...]}, "correct": {rank: [...]}}

confidences are the validation images' consistent confidences at each rank (rollup.label_tree's tree, from the
temperature-scaled heads), surest first, and correct says whether the consistent prediction was right there:
a threshold reaching a target precision is then rollup.precision_threshold of the two. Written by
`trainer.train.run` at the end of a run and by `trainer.evaluate --rollup_precision` for a run without one
(trainer.run_dir.write_atomically: a reader sees the whole file or none).
"""

import dataclasses
import json
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np

from trainer import cli
from trainer.evaluation import calibration, rollup
from trainer.run_dir import RunFiles, write_atomically


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Per-head temperatures and per-rank validation confidences with their correctness (see the module)."""

    label_rank: str
    ranks: tuple[str, ...]
    temperatures: Mapping[str, float]
    confidences: Mapping[str, np.ndarray]
    correct: Mapping[str, np.ndarray]
    validation: Mapping[str, object] = dataclasses.field(default_factory=dict)

    def scaled(self, heads: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The heads' softmax rows at their temperatures (heads outside the tree as they are)."""
        return {head: calibration.scaled_probabilities(calibration.as_logits(rows), self.temperatures[head])
                if head in self.temperatures else rows for head, rows in heads.items()}

    def thresholds(self, target: float) -> np.ndarray:
        """Per rank, the smallest confidence at which validation's answers there reach `target` precision
        (inf: the rank is never answered)."""
        return np.array([rollup.precision_threshold(self.confidences[rank], self.correct[rank], target)
                         for rank in self.ranks])

    def to_json(self) -> dict:
        return {"label_rank": self.label_rank, "ranks": list(self.ranks), "temperatures": dict(self.temperatures),
                "validation": dict(self.validation),
                "confidences": {rank: self.confidences[rank].tolist() for rank in self.ranks},
                "correct": {rank: self.correct[rank].astype(bool).tolist() for rank in self.ranks}}


class CalibrationFileError(cli.UserError):
    """calibration.json is there but not readable; the message is one line."""


def fit(tree: rollup.Tree, labels: np.ndarray, heads: Mapping[str, np.ndarray]) -> Calibration:
    """The calibration of a model (tree: rollup.label_tree of its label names and taxonomy) from validation's
    label-rank ids and every head's softmax rows; images outside the taxonomy (-1) sit out."""
    known = np.asarray(labels) >= 0
    truth = tree.leaf_paths[np.asarray(labels)[known]]
    in_tree = {head: np.asarray(rows, dtype=np.float64)[known] for head, rows in heads.items() if head in tree.ranks}
    temperatures, nll, nll_scaled = {}, {}, {}
    for head, rows in in_tree.items():
        ids, logits = truth[:, tree.ranks.index(head)], calibration.as_logits(rows)
        temperatures[head] = calibration.fit_temperature(ids, logits)
        nll[head] = calibration.negative_log_likelihood(ids, logits)
        nll_scaled[head] = calibration.negative_log_likelihood(ids, logits, temperatures[head])
    scaled = {head: calibration.scaled_probabilities(calibration.as_logits(rows), temperatures[head])
              for head, rows in in_tree.items()}
    ids, confidences = tree.predictions(scaled)
    correct = ids == truth
    order = np.argsort(-confidences, axis=0, kind="stable")
    return Calibration(tree.ranks[-1], tree.ranks, temperatures,
                       {rank: confidences[order[:, r], r] for r, rank in enumerate(tree.ranks)},
                       {rank: correct[order[:, r], r] for r, rank in enumerate(tree.ranks)},
                       {"examples": int(known.sum()), "nll": nll, "nll_scaled": nll_scaled})


def write(model_dir: str | pathlib.Path, calibrated: Calibration) -> pathlib.Path:
    """Writes <model_dir>/calibration.json atomically; returns its path."""
    path = RunFiles(pathlib.Path(model_dir).expanduser()).calibration
    write_atomically(path, json.dumps(calibrated.to_json()) + "\n")
    return path


def read(model_dir: str | pathlib.Path) -> Calibration | None:
    """The run's calibration.json, None when it has none; CalibrationFileError when it cannot be read."""
    path = RunFiles(pathlib.Path(model_dir).expanduser()).calibration
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        ranks = tuple(data["ranks"])
        return Calibration(data["label_rank"], ranks, {head: float(t) for head, t in data["temperatures"].items()},
                           {rank: np.asarray(data["confidences"][rank], dtype=np.float64) for rank in ranks},
                           {rank: np.asarray(data["correct"][rank], dtype=bool) for rank in ranks},
                           data.get("validation", {}))
    except (OSError, ValueError, KeyError, TypeError) as error:
        detail = str(error).splitlines()[0] if str(error) else "no detail"
        raise CalibrationFileError(f"{path}: not a calibration file of this project ({type(error).__name__}: "
                                   f"{detail}); delete it and write it again with `python -m trainer.evaluate "
                                   f"--model_dir={model_dir} --rollup_precision=0.95`") from None


def read_matching(model_dir: str | pathlib.Path, tree: rollup.Tree, heads: Sequence[str]) -> Calibration:
    """The run's calibration.json for the roll-up of the model with that tree and those heads; one
    CalibrationFileError line when it is missing or belongs to another model."""
    write_it = (f"write it with `python -m trainer.evaluate --model_dir={model_dir} --rollup_precision=0.95` "
                "(or retrain)")
    calibrated = read(model_dir)
    if calibrated is None:
        raise CalibrationFileError(f"--rollup_precision: {model_dir} has no calibration.json; {write_it}")
    if calibrated.ranks != tree.ranks or set(calibrated.temperatures) - set(heads):
        raise CalibrationFileError(f"--rollup_precision: {model_dir}/calibration.json is not this model's (ranks "
                                   f"{','.join(calibrated.ranks)}, heads {','.join(calibrated.temperatures)}); "
                                   f"delete it and {write_it}")
    return calibrated
