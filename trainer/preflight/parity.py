"""Replica parity: a few optimisation steps of the run's model on one replica and on all the replicas of the
run's strategy, at the same global batch, from the same initial weights, with the run's optimizer, peak
learning rate, loss, precision and XLA setting, on generated images and labels.

Keras under tf.distribute has failed in ways only several replicas show: NaN losses under MirroredStrategy
(keras-team/keras#21061, tensorflow/tensorflow#90686), gradients not summed across replicas (keras#19891),
mixed_float16 + MirroredStrategy + XLA crashing (keras#21366). Summed correctly, N replicas each on 1/N of a
batch take the steps one device takes on the whole batch, up to the order of floating-point sums. So the check
compares, step by step, the losses, then the weight updates (after - before) of every trainable variable, and
requires every replica's copy of the weights to be the same. What would differ by design is held fixed on both
sides: dropout is off and BatchNormalization in inference mode (masks and batch statistics are per replica,
BatchNormalization is not synchronised), and the on-device augmentation layers are left out (random per
replica); the steps run at the phase's peak rate (the warmup starts at 0, which would hide the updates).
"""

import dataclasses
import math
import time

import keras
import numpy as np
import tensorflow as tf

from trainer.preflight import data
from trainer.preflight.report import FAIL, Result, fail, first_line, ok
from trainer.training import distribute, models, objectives, schedules, train
from trainer.training.config import Config


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """Largest relative difference accepted: of a step's loss, and of a variable's update (its norm)."""

    loss: float
    update: float


# float32 sums in another order differ by ~1e-7 relative (measured ~5e-7 on the updates). float16 and bfloat16
# keep 11 and 8 bits, and Adam's first steps move each weight by about +-rate whatever its gradient's size, so a
# gradient that rounds to the other sign moves its weight the other way: measured on the baseline CNN 3e-2
# (float16) and 7e-2 (bfloat16) of the update, where skipping the cross-replica sum gives 0.8.
TOLERANCES = {"none": Tolerance(1e-4, 1e-3), "mixed_float16": Tolerance(1e-2, 0.1),
              "mixed_bfloat16": Tolerance(3e-2, 0.2)}


@dataclasses.dataclass
class Trace:
    """One side's steps: each step's loss and seconds, every weight at the start (for the other side), the
    trainable weights before and after the steps (first replica's copy) and whether every replica's copy is
    the same; or the error that stopped them."""

    losses: list[float] = dataclasses.field(default_factory=list)
    seconds: list[float] = dataclasses.field(default_factory=list)
    start: list[np.ndarray] = dataclasses.field(default_factory=list)
    names: list[str] = dataclasses.field(default_factory=list)
    before: list[np.ndarray] = dataclasses.field(default_factory=list)
    after: list[np.ndarray] = dataclasses.field(default_factory=list)
    replicas_agree: bool = True
    error: str | None = None

    @property
    def finite(self) -> bool:
        return all(math.isfinite(loss) for loss in self.losses)

    def timing(self) -> str:
        later = self.seconds[1:] or self.seconds
        return f"{sum(later) / len(later):.3f} s/step (first step {self.seconds[0]:.1f} s)"


class _StepRecorder(keras.callbacks.Callback):
    """Each step's loss and wall time; reading the loss waits for the step to finish on the devices."""

    def __init__(self, trace: Trace):
        super().__init__()
        self.trace, self.started = trace, 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.trace.losses.append(float(logs["loss"]))
        self.trace.seconds.append(time.perf_counter() - self.started)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What both sides train: the run's config without dropout, which layers, at which rate and batch."""

    config: Config
    layers: int
    rate: float
    global_batch: int
    steps: int

    def described(self) -> str:
        config = self.config
        trained = {0: "head", -1: "all layers"}.get(self.layers, f"head + last {self.layers} layers")
        precision = "float32" if config.mixed_precision == "none" else config.mixed_precision
        return (f"{self.steps} {config.optimizer} steps of {config.backbone} ({trained}, "
                f"--weights={config.weights}) at global batch {self.global_batch}, {precision}"
                f"{', XLA' if config.jit_compile else ''}")


def make_plan(config: Config, replicas: int, steps: int, batch_size: int, weights: str) -> Plan:
    """The phase with the most trainable layers the run has (phase 2, whose settings the oversampling phase
    shares, else phase 1's head), at its peak rate scaled for the run's global batch."""
    fine_tunes = config.phase2_epochs or config.oversample_epochs
    layers, rate = ((config.unfreeze_layers, config.phase2_learning_rate) if fine_tunes
                    else (0, config.phase1_learning_rate))
    rate = distribute.scaled_learning_rate(rate, config.batch_size * replicas, config.lr_scaling,
                                           config.reference_batch_size)
    return Plan(dataclasses.replace(config, pool_dropout=0.0, dense_dropout=0.0, weights=weights), layers, rate,
                batch_size * replicas, steps)


def generated_batches(config: Config, global_batch: int, steps: int) -> tf.data.Dataset:
    """Seeded random images (scaled as the backbone expects), labels for every head, and sample weights like
    the class weights when the run weights its loss."""
    rng = np.random.default_rng(config.seed)
    count, size = global_batch * steps, config.input_size
    images = config.backbone_spec.preprocess(rng.uniform(0, 255, (count, size, size, 3)).astype("float32"))
    labels = {rank: rng.integers(0, classes, count) for rank, classes in data.class_counts(config).items()}
    labels = labels if len(labels) > 1 else labels[config.label_rank]
    parts = (images, labels) if config.class_weights == "none" else (
        images, labels, rng.uniform(0.5, 2.0, count).astype("float32"))
    return tf.data.Dataset.from_tensor_slices(parts).batch(global_batch).repeat()


def build(plan: Plan, strategy: tf.distribute.Strategy) -> keras.Model:
    """The run's classifier under the strategy, compiled with the run's loss, optimizer and XLA setting."""
    config = plan.config
    num_classes = data.class_counts(config)
    with strategy.scope():
        classifier = models.build_classifier(config, [], num_classes)
        models.set_trainable_backbone(classifier, plan.layers, keep_batchnorm_frozen=True)
        optimizer = schedules.optimizer(config.optimizer, plan.rate, config.momentum, config.weight_decay)
        compiled = objectives.compile_arguments(config.label_rank, config.aux_loss_weight, config.label_smoothing,
                                                num_classes, one_hot_labels=False)
        classifier.model.compile(optimizer=optimizer, loss=compiled["loss"], loss_weights=compiled["loss_weights"],
                                 jit_compile=config.jit_compile)
    return classifier.model


def run_side(plan: Plan, strategy: tf.distribute.Strategy, start: list[np.ndarray] | None = None) -> Trace:
    """plan.steps steps under the strategy, one per epoch so each step's loss is its own (Keras averages the
    loss within an epoch); start: every weight to begin from (the other side's), else the seeded init."""
    train.set_numerics(plan.config)  # the run's seed, op determinism and mixed-precision policy
    trace = Trace()
    try:
        model = build(plan, strategy)
        if start:
            model.set_weights(start)
        trace.start, trace.names = model.get_weights(), [variable.path for variable in model.trainable_weights]
        trace.before = [variable.numpy() for variable in model.trainable_weights]
        model.fit(generated_batches(plan.config, plan.global_batch, plan.steps), epochs=plan.steps,
                  steps_per_epoch=1, shuffle=False, verbose=0, callbacks=[_StepRecorder(trace)])
    except Exception as error:  # a crash in a step is a finding: the known-bad combinations crash there
        trace.error = first_line(error)
        return trace
    trace.after = [variable.numpy() for variable in model.trainable_weights]
    # Every replica applies the same summed gradients to the same values: copies differ only across GPU models.
    trace.replicas_agree = all(np.allclose(np.asarray(copy), first, rtol=1e-6, atol=0)
                               for variable, first in zip(model.trainable_weights, trace.after)
                               for copy in strategy.experimental_local_results(variable.value))
    return trace


def gaps(reference: Trace, candidate: Trace) -> tuple[float, float, str]:
    """(largest relative difference of a step's loss, relative difference of the weight update over all
    trainable variables, the variable that differs most). One norm over all variables, not the worst
    variable's: a variable whose gradient is nearly zero takes a sign-of-noise step under Adam on either side."""
    loss_gap = max(abs(mine - theirs) / max(abs(theirs), 1e-12)
                   for mine, theirs in zip(candidate.losses, reference.losses))
    differences = [np.linalg.norm(mine - theirs) for theirs, mine in zip(reference.after, candidate.after)]
    expected = np.sqrt(sum(np.sum(np.square(theirs - before)) for before, theirs in zip(reference.before,
                                                                                         reference.after)))
    update_gap = float(np.linalg.norm(differences) / max(expected, 1e-30))
    worst = reference.names[int(np.argmax(differences))] if update_gap else ""
    return float(loss_gap), update_gap, worst


def avoiding_flags(config: Config) -> str:
    """The flags that leave out what the known multi-replica failures need."""
    flags = [flag for flag, used in (("--mixed_precision=none", config.mixed_precision != "none"),
                                     ("--nojit_compile", config.jit_compile)) if used]
    return " or ".join([*flags, "--strategy=one_device (one replica)"])


def _one_side_problem(plan: Plan, reference: Trace) -> str | None:
    """Why the steps fail on one device already, which no strategy flag avoids."""
    mixed = plan.config.mixed_precision != "none"
    if reference.error:
        hint = ("--nojit_compile" if plan.config.jit_compile else "--mixed_precision=none" if mixed
                else "the error")
        return f"one device could not train ({reference.error}): see {hint}"
    if not reference.finite:
        phase = "phase2" if plan.layers else "phase1"
        return (f"the loss is not finite on one device either ({_shown(reference.losses)}): lower "
                f"--{phase}_learning_rate{' or use --mixed_precision=none' if mixed else ''}")
    return None


def _shown(losses: list[float]) -> str:
    return ", ".join(f"{loss:.4g}" for loss in losses)


def compare(plan: Plan, name: str, reference: Trace, candidate: Trace) -> Result:
    """The verdict on the two sides' traces; name: the strategy, e.g. 'MirroredStrategy x4'."""
    heading, avoid = plan.described(), avoiding_flags(plan.config)
    if candidate.error:
        return fail("parity", f"{heading}: {name} failed ({candidate.error}) where one device trained (known: "
                              f"mixed_float16 + MirroredStrategy + XLA, keras#21366): avoid with {avoid}")
    if not candidate.finite:
        return fail("parity", f"{heading}: losses {_shown(candidate.losses)} under {name} but "
                              f"{_shown(reference.losses)} on one device (known: NaN under MirroredStrategy, "
                              f"keras#21061, tensorflow#90686): avoid with {avoid}")
    tolerance = TOLERANCES[plan.config.mixed_precision]
    loss_gap, update_gap, worst = gaps(reference, candidate)
    measured = (f"per-step losses differ by {loss_gap:.1e} (tolerance {tolerance.loss:g}) and weight updates by "
                f"{update_gap:.1e} (tolerance {tolerance.update:g}), relative")
    if not candidate.replicas_agree:
        return fail("parity", f"{heading}: the replicas of {name} hold different weights after the steps; "
                              f"{measured}: avoid with {avoid}")
    if loss_gap > tolerance.loss or update_gap > tolerance.update:
        return fail("parity", f"{heading}: {name} does not train as one device: {measured}, most in {worst}; its "
                              "replicas' gradients are not combined as one device's (known: keras#19891): upgrade "
                              f"Keras (pip install -U keras) or avoid with {avoid}")
    return ok("parity", f"{heading}: one device and {name} agree, {measured}; losses finite "
                        f"({_shown(candidate.losses)}); one device {reference.timing()}, {name} {candidate.timing()}")


def check_plan(plan: Plan, strategy: tf.distribute.Strategy) -> Result:
    """One device (the strategy's first) against the strategy."""
    reference = run_side(plan, tf.distribute.OneDeviceStrategy(strategy.extended.worker_devices[0]))
    problem = _one_side_problem(plan, reference)
    if problem:
        return fail("parity", f"{plan.described()}: {problem}")
    if isinstance(strategy, tf.distribute.OneDeviceStrategy):
        return ok("parity", f"{plan.described()}: one replica, so no cross-replica sum to compare; losses finite "
                            f"({_shown(reference.losses)}); {reference.timing()}")
    name = f"{distribute.public_name(strategy)} x{strategy.num_replicas_in_sync}"
    return compare(plan, name, reference, run_side(plan, strategy, reference.start))


def check(config: Config, strategy: tf.distribute.Strategy, steps: int, batch_size: int, weights: str) -> Result:
    """The run's settings on one device and under the strategy; weights: the initial weights to use (the run's
    when they are at hand, else none). A mixed-precision run is compared in float32 first, where the
    tolerance is tight enough to test the sum itself, then at its own precision (non-finite losses, crashes)."""
    precisions = dict.fromkeys(["none", config.mixed_precision])
    verdicts = []
    for precision in precisions:
        plan = make_plan(dataclasses.replace(config, mixed_precision=precision), strategy.num_replicas_in_sync,
                         steps, batch_size, weights)
        verdict = check_plan(plan, strategy)
        if verdict.status == FAIL:
            return _noting_weights(verdict, config.weights, weights)
        verdicts.append(verdict.message)
    return _noting_weights(ok("parity", "; then ".join(verdicts)), config.weights, weights)


def _noting_weights(result: Result, asked: str, used: str) -> Result:
    if asked == used:
        return result
    return dataclasses.replace(result, message=f"random initial weights in place of --weights={asked}, which are "
                                               f"not at hand (see the weights line): {result.message}")
