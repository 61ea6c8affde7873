"""The tree-consistent answer and the roll-up as TensorFlow ops, for the exported SavedModel (serving.py): what
`trainer.predict` computes in numpy (trainer/numbers/rollup.py), inside the graph, so a TF Serving client
gets the same answers without the run's files.

    outputs = TreeOutputs.of(tree, calibrated, precision)(heads)     # heads: {rank: softmax rows}

  consistent_names, consistent_probabilities  [batch, ranks], phylum first: the most probable leaf of the
      consistent leaf scores (the product of the per-rank probabilities along each path; predict's top-1) and
      its ancestors, each with its node's probability (the sum of its leaves' scores);
  rollup_rank, rollup_name, rollup_probability  [batch] (with a calibration): the same computed on the heads
      at their calibrated temperatures, then the deepest rank whose confidence reaches that rank's threshold
      for the asked precision (Calibration.thresholds); "", "" and 0 where no rank does.

The arithmetic is float64 like rollup.py's, so an answer agrees with predict's to rounding (tests check rank,
name and probability within 1e-5 on the same images).
"""

import dataclasses
from collections.abc import Mapping

import numpy as np
import tensorflow as tf

from trainer.numbers import calibration, rollup

_SMALLEST = np.finfo(np.float64).tiny


@dataclasses.dataclass(frozen=True)
class TreeOutputs:
    """The constants of the in-graph answers: the tree, per rank the temperature of its head (None: no head,
    or not calibrated) and, with a roll-up, the per-rank thresholds."""

    tree: rollup.Tree
    temperatures: Mapping[str, float] = dataclasses.field(default_factory=dict)
    thresholds: tuple[float, ...] | None = None

    @classmethod
    def of(cls, tree: rollup.Tree, calibrated: calibration.RollupCalibration | None = None,
           precision: float = 0.0) -> "TreeOutputs":
        """Outputs of the consistent answer, and of the roll-up at `precision` when calibrated is given."""
        if calibrated is None or not precision:
            return cls(tree)
        return cls(tree, dict(calibrated.temperatures), tuple(float(t) for t in calibrated.thresholds(precision)))

    def metadata(self, precision: float) -> dict:
        """What an export's metadata says of the tree and the roll-up, enough to answer like predict from the
        heads' softmax rows alone (a LiteRT device has no graph for it): the ranks, each rank's names, each
        label's path (ids per rank) and, with a roll-up, its temperatures and per-rank thresholds (None: the
        rank is never answered)."""
        described = {"ranks": list(self.tree.ranks), "rank_names": [list(names) for names in self.tree.rank_names],
                     "leaf_paths": self.tree.leaf_paths.tolist()}
        if self.thresholds is not None:
            described["rollup"] = {"precision": precision, "temperatures": dict(self.temperatures),
                                   "thresholds": {rank: value if np.isfinite(value) else None
                                                  for rank, value in zip(self.tree.ranks, self.thresholds)}}
        return described

    def __call__(self, heads: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        ids, confidences = self._predictions(heads, {})
        outputs = {"consistent_names": self._names(ids), "consistent_probabilities": tf.cast(confidences, tf.float32)}
        if self.thresholds is not None:
            outputs.update(self._rolled_up(*self._predictions(heads, self.temperatures)))
        return outputs

    def _predictions(self, heads: Mapping[str, tf.Tensor], temperatures: Mapping[str, float]):
        """rollup.consistent_predictions in TF: (ids, confidences), each [batch, ranks], of the heads at the
        given temperatures (a head without one as it is)."""
        paths = self.tree.leaf_paths
        log_scores = 0.0
        for rank_index, rank in enumerate(self.tree.ranks):
            if rank in heads:
                log_probabilities = _log(tf.cast(heads[rank], tf.float64))
                if rank in temperatures:
                    log_probabilities = _log(tf.nn.softmax(log_probabilities / temperatures[rank], axis=1))
                log_scores += tf.gather(log_probabilities, paths[:, rank_index], axis=1)
        leaves = tf.nn.softmax(log_scores, axis=1)
        ids = tf.gather(tf.constant(paths, tf.int64), tf.argmax(leaves, axis=1, output_type=tf.int64))
        confidences = [tf.gather(leaves @ tf.constant(rollup.membership(paths[:, rank], len(names))), ids[:, rank],
                                 batch_dims=1)
                       for rank, names in enumerate(self.tree.rank_names)]
        return ids, tf.stack(confidences, axis=1)

    def _names(self, ids: tf.Tensor) -> tf.Tensor:
        """[batch, ranks] names of [batch, ranks] ids."""
        return tf.stack([tf.gather(tf.constant(names), ids[:, rank]) for rank, names in
                         enumerate(self.tree.rank_names)], axis=1)

    def _rolled_up(self, ids: tf.Tensor, confidences: tf.Tensor) -> dict[str, tf.Tensor]:
        """rollup.deepest_confident_rank and roll_up in TF."""
        reached = confidences >= tf.constant(self.thresholds, tf.float64)
        depths = tf.range(len(self.tree.ranks), dtype=tf.int64)
        deepest = tf.reduce_max(tf.where(reached, depths, -1), axis=1)
        answered, deepest = deepest >= 0, tf.maximum(deepest, 0)
        name = tf.gather(self._names(ids), deepest, batch_dims=1)
        probability = tf.gather(confidences, deepest, batch_dims=1)
        return {"rollup_rank": tf.where(answered, tf.gather(tf.constant(self.tree.ranks), deepest), ""),
                "rollup_name": tf.where(answered, name, ""),
                "rollup_probability": tf.cast(tf.where(answered, probability, 0.0), tf.float32)}


def _log(probabilities: tf.Tensor) -> tf.Tensor:
    """log p with zeros kept finite, as calibration.as_logits and rollup.leaf_scores do."""
    return tf.math.log(tf.maximum(probabilities, _SMALLEST))
