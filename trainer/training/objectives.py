"""Loss and metrics on the labels pipelines yield: int class ids, or one-hot rows under MixUp/CutMix.

Label smoothing needs one-hot targets while pipelines yields ids (cheaper to ship and to mix into a two-head
dict), and a distributed dataset cannot be mapped afterwards, so the loss and the metrics convert ids
themselves: one loss and one set of metrics serve both label forms, in training and evaluation alike.

Hierarchy-aware soft labels (Bertinetto et al., "Making Better Mistakes", CVPR 2020, --soft_labels_beta): each
head's target for true label t is y_i proportional to exp(-beta * h(i, t)), h the LCA height in the taxonomy
(trainer/numbers/metrics.py's lca_heights of that head's rank), so a guess into a sister family costs less
than one into another phylum; large beta tends to one-hot, beta 0 turns it off. The loss makes the targets
from the ids (or mixes of one-hot rows, by linearity) and label smoothing then applies on top.

Macro-F1 is the model-selection metric. Keras' F1Score(average="macro") averages over all 202 outputs, so a
split holding 40 families would score at most 40/202; MacroF1 streams the one definition of
trainer/numbers/metrics.py instead: the average over the classes seen as truth or prediction, i.e.
`sklearn.metrics.f1_score(y_true, y_pred, average="macro")` (tests check that they agree).
"""

from collections.abc import Mapping

import keras
import numpy as np
from keras import ops


def as_one_hot(y_true, num_classes: int):
    """One-hot (or soft) rows pass through; int class ids of shape (B,) or (B, 1) become one-hot rows."""
    if len(y_true.shape) == 2 and y_true.shape[-1] == num_classes:
        return ops.cast(y_true, "float32")
    return ops.one_hot(ops.reshape(ops.cast(y_true, "int32"), (-1,)), num_classes)


def soft_label_targets(heights: np.ndarray, beta: float) -> np.ndarray:
    """(labels, labels) row t: the soft target of true label t, exp(-beta * heights[t]) normalised (heights:
    LCA heights, 0 on the diagonal)."""
    scores = np.exp(-beta * np.asarray(heights, dtype=np.float64))
    return (scores / scores.sum(axis=1, keepdims=True)).astype(np.float32)


@keras.saving.register_keras_serializable(package="rare_species")
class SmoothedCrossentropy(keras.losses.Loss):
    """Categorical cross-entropy with label smoothing, on class ids or one-hot rows; with heights (LCA heights
    between the labels) and soft_labels_beta > 0, on the hierarchy-aware soft targets of soft_label_targets."""

    def __init__(self, num_classes: int, label_smoothing: float = 0.0, soft_labels_beta: float = 0.0,
                 heights=None, name: str = "smoothed_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes, self.label_smoothing = num_classes, label_smoothing
        if soft_labels_beta and heights is None:
            raise ValueError("soft_labels_beta > 0 needs the LCA heights between the labels (heights)")
        self.soft_labels_beta = soft_labels_beta
        self.heights = np.asarray(heights, dtype=np.int32) if soft_labels_beta else None
        self.targets = None if self.heights is None else soft_label_targets(self.heights, soft_labels_beta)

    def call(self, y_true, y_pred):
        return keras.losses.categorical_crossentropy(self.targets_of(y_true), y_pred,
                                                     label_smoothing=self.label_smoothing)

    def targets_of(self, y_true):
        """The target rows of class ids or one-hot rows: one-hot, or soft over the LCA heights."""
        targets = as_one_hot(y_true, self.num_classes)
        if self.targets is not None:
            targets = ops.matmul(targets, ops.convert_to_tensor(self.targets))
        return targets

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "label_smoothing": self.label_smoothing,
                "soft_labels_beta": self.soft_labels_beta,
                "heights": None if self.heights is None else self.heights.tolist()}


@keras.saving.register_keras_serializable(package="rare_species")
class LogitAdjustedCrossentropy(SmoothedCrossentropy):
    """The logit-adjusted loss (Menon et al., "Long-tail learning via logit adjustment", ICLR 2021): the
    cross-entropy of softmax(logits + tau * log prior), which charges a frequent label's margin more than a
    rare one's, so the model's own (unadjusted) outputs are balanced at inference. The heads end in a softmax,
    so the logits are its log-probabilities (clipped as Keras' cross-entropy clips probabilities): a softmax
    is unchanged by the shift log-softmax adds. adjustments: tau * log prior per label (recipe.log_priors)."""

    def __init__(self, num_classes: int, adjustments, label_smoothing: float = 0.0, soft_labels_beta: float = 0.0,
                 heights=None, name: str = "logit_adjusted_crossentropy", **kwargs):
        super().__init__(num_classes, label_smoothing, soft_labels_beta, heights, name=name, **kwargs)
        self.adjustments = np.asarray(adjustments, dtype=np.float32)

    def call(self, y_true, y_pred):
        epsilon = keras.config.epsilon()
        logits = ops.log(ops.clip(ops.cast(y_pred, "float32"), epsilon, 1.0)) + ops.convert_to_tensor(
            self.adjustments)
        return keras.losses.categorical_crossentropy(self.targets_of(y_true), logits, from_logits=True,
                                                     label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "adjustments": self.adjustments.tolist()}


@keras.saving.register_keras_serializable(package="rare_species")
class MacroF1(keras.metrics.Metric):
    """Macro-F1 over the classes seen as truth or prediction, from per-class true/false positive and false
    negative counts.

    The counts are metric variables, which tf.distribute sums across replicas and workers before `result`, so
    the value is exact over the whole split under any strategy. They are unweighted on purpose: class weights
    reshape the loss, not the yardstick.
    """

    def __init__(self, num_classes: int, name: str = "macro_f1", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.true_positives = self.add_variable((num_classes,), "zeros", name="true_positives")
        self.false_positives = self.add_variable((num_classes,), "zeros", name="false_positives")
        self.false_negatives = self.add_variable((num_classes,), "zeros", name="false_negatives")

    def update_state(self, y_true, y_pred, sample_weight=None):
        del sample_weight
        truth = ops.one_hot(ops.argmax(as_one_hot(y_true, self.num_classes), axis=-1), self.num_classes)
        guess = ops.one_hot(ops.argmax(y_pred, axis=-1), self.num_classes)
        hits = truth * guess
        self.true_positives.assign_add(ops.sum(hits, axis=0))
        self.false_positives.assign_add(ops.sum(guess - hits, axis=0))
        self.false_negatives.assign_add(ops.sum(truth - hits, axis=0))

    def result(self):
        tp, fp, fn = self.true_positives, self.false_positives, self.false_negatives
        seen = 2.0 * tp + fp + fn
        present = ops.cast(seen > 0, seen.dtype)
        return ops.divide_no_nan(ops.sum(ops.divide_no_nan(2.0 * tp, seen)), ops.sum(present))

    def reset_state(self):
        for variable in (self.true_positives, self.false_positives, self.false_negatives):
            variable.assign(ops.zeros_like(variable))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def compile_arguments(label_rank: str, aux_loss_weight: float, label_smoothing: float,
                      num_classes: Mapping[str, int], one_hot_labels: bool, soft_labels_beta: float = 0.0,
                      heights: Mapping[str, np.ndarray] | None = None, *,
                      adjustments: Mapping[str, np.ndarray] | None = None) -> dict:
    """model.compile's loss, loss_weights and metrics for heads named by rank (num_classes: names per head):
    the label rank's loss weighs 1 and carries the metrics, every other head's weighs aux_loss_weight; with
    soft_labels_beta > 0 each head's targets are soft over heights[rank] (its labels' LCA heights); with
    adjustments (recipe.logit_adjustments), each head's loss is logit-adjusted by adjustments[rank]."""
    heights = heights or {}

    def loss(rank: str, count: int) -> SmoothedCrossentropy:
        if adjustments is None:
            return SmoothedCrossentropy(count, label_smoothing, soft_labels_beta, heights.get(rank))
        return LogitAdjustedCrossentropy(count, adjustments[rank], label_smoothing, soft_labels_beta,
                                         heights.get(rank))

    return {"loss": {rank: loss(rank, count) for rank, count in num_classes.items()},
            "loss_weights": {rank: 1.0 if rank == label_rank else aux_loss_weight for rank in num_classes},
            "metrics": {label_rank: label_metrics(num_classes[label_rank], one_hot_labels)}}


def label_metrics(num_classes: int, one_hot_labels: bool) -> list[keras.metrics.Metric]:
    """Macro-F1 (model selection), accuracy and top-5 accuracy of the label rank's head, streamed over each
    epoch; the figures of a finished run come from trainer/numbers/metrics.py."""
    if one_hot_labels:
        accuracy, top5 = keras.metrics.CategoricalAccuracy, keras.metrics.TopKCategoricalAccuracy
    else:
        accuracy, top5 = keras.metrics.SparseCategoricalAccuracy, keras.metrics.SparseTopKCategoricalAccuracy
    return [MacroF1(num_classes), accuracy(name="accuracy"), top5(k=5, name="top5_accuracy")]
