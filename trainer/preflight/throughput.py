"""Are the accelerators fed? The run's training input alone (its tf.data pipeline from the built dataset, as the
trainer makes it, for a few seconds) against a few training steps of the run's model alone on generated batches
held in memory (no decoding), in images per second, and the verdict: input-bound when the input makes fewer
images a second than a phase's steps take, with the fixes that apply to these flags.

Each side is measured alone, with the whole machine: during training they share the host (the input's
threads, Keras' step dispatch), so a verdict with little headroom is worth a look at the run's `input_wait`
column (trainer/training/input_wait.py), which measures the real thing every epoch. With the decoded-image
cache on (--train_cache_gib), the input is measured without it: its first pass decodes the whole split before
the first batch, more than a few seconds; epochs after the first skip the decode, so they are faster than the
rate shown. On a machine without GPU the model's steps run on the same cores as the input: the two rates do not
add up there.
"""

import dataclasses
import math
import os
import statistics
import time

import tensorflow as tf

import pipelines
import tfds_rarespecies
from pipelines import cpu_augmentation, datasets, reading
from trainer.preflight import parity
from trainer.preflight.report import Result, ok, warn
from trainer.training import inputs, train
from trainer.training.config import Config

CROP_RATIO = 0.875  # the stored short side the crops need: input / 0.875 (BUILD-notes.md, stored sizes)
ROOMY = 1.25  # input at least this many times the steps' rate: compute-bound with room for the host's other work


@dataclasses.dataclass(frozen=True)
class Budget:
    """How long each side is measured: seconds of input after its first batches, timed model steps."""

    seconds: float
    steps: int


@dataclasses.dataclass(frozen=True)
class Measured:
    """Images a second: the input's, and each image-reading phase's training steps'."""

    input: float
    phases: dict[str, float]


def input_rate(batches: tf.data.Dataset, global_batch: int, seconds: float, warmup: int = 2) -> float:
    """Images a second the dataset delivers, timed for `seconds` (at least 3 batches) after `warmup` batches
    (the shuffle buffer filling, the first parallel calls)."""
    iterator = iter(batches)
    for _ in range(warmup):
        next(iterator)
    count, start = 0, time.perf_counter()
    while count < 3 or time.perf_counter() - start < seconds:
        next(iterator)
        count += 1
    return count * global_batch / (time.perf_counter() - start)


def training_input(config: Config, strategy: tf.distribute.Strategy) -> tuple[tf.data.Dataset, bool]:
    """(the run's training batches, whether the decoded-image cache was left out to measure them)."""
    cfg = inputs.input_config(config)
    cached = datasets.caches_training_images(cfg, config.train_split)
    if cached:
        cfg = dataclasses.replace(cfg, train_cache_bytes=0)
    return pipelines.make_dataset(cfg, config.train_split, training=True, strategy=strategy), cached


def phases_reading_images(config: Config) -> dict[str, int]:
    """phase -> backbone layers it trains, for the phases whose steps read images (phase 1 on cached
    embeddings reads none)."""
    phases = {}
    if config.phase1_epochs and not config.phase1_cached_features:
        phases["phase1"] = 0
    if config.phase2_epochs or config.oversample_epochs:
        phases["phase2"] = config.unfreeze_layers
    return phases


def model_rate(config: Config, strategy: tf.distribute.Strategy, layers: int, steps: int) -> float:
    """Images a second of the run's training steps (its model, precision, XLA, global batch) training
    `layers` backbone layers, on one generated batch held in memory: the median of `steps` steps after the
    first (tracing)."""
    global_batch = config.batch_size * strategy.num_replicas_in_sync
    plan = parity.Plan(dataclasses.replace(config, weights="none"), layers, config.phase1_learning_rate,
                       global_batch, steps + 1)
    train.set_numerics(plan.config)  # the run's seed and mixed-precision policy, as parity sets them
    model = parity.build(plan, strategy)
    trace = parity.Trace()
    model.fit(parity.generated_batches(plan.config, global_batch, 1), epochs=1, steps_per_epoch=steps + 1,
              shuffle=False, verbose=0, callbacks=[parity._StepRecorder(trace)])
    return global_batch / statistics.median(trace.seconds[1:])


def measure(config: Config, strategy: tf.distribute.Strategy, budget: Budget) -> tuple[Measured, bool]:
    """(both rates, whether the input was measured without its cache)."""
    batches, without_cache = training_input(config, strategy)
    rate = input_rate(batches, config.batch_size * strategy.num_replicas_in_sync, budget.seconds)
    del batches
    phases = {phase: model_rate(config, strategy, layers, budget.steps)
              for phase, layers in phases_reading_images(config).items()}
    return Measured(rate, phases), without_cache


def fixes(config: Config, measured: Measured, bound: list[str]) -> list[str]:
    """What would feed the steps, for these flags, most effective first."""
    cfg = inputs.input_config(config)
    found = []
    if "phase1" in bound:
        found.append("--phase1_cached_features (phase 1 then trains on the backbone's cached embeddings and "
                     "reads no image after the first pass)")
    if not datasets.caches_training_images(cfg, config.train_split):
        need = reading.stored_pixels(cfg, config.train_split) * 3 / (1 << 30)
        found.append(f"--train_cache_gib={math.ceil(need * 1.1)} (keeps the {need:.1f} GiB of decoded training "
                     "images in memory: epochs after the first skip the JPEG decode)")
    if cpu_augmentation.is_active(config.augment, config.augment_strength) and not config.augment_on_device:
        found.append("--augment_on_device (the augmentation runs on the accelerators, not on the host)")
    smaller = _smaller_stored_config(config)
    if smaller:
        found.append(smaller)
    cores, fastest = os.cpu_count() or 1, max(measured.phases[phase] for phase in bound)
    found.append(f"more host cores: about {math.ceil(cores * fastest / measured.input)} at this rate per core "
                 f"(this machine has {cores})")
    return found


def _smaller_stored_config(config: Config) -> str | None:
    """A built config with a smaller stored size that still leaves room for the crops, when there is one."""
    stored = reading.load_builder(inputs.input_config(config)).builder_config.short_side
    needed = config.input_size / CROP_RATIO
    smaller = sorted((candidate.short_side, candidate.name) for candidate in tfds_rarespecies.Builder.BUILDER_CONFIGS
                     if needed <= candidate.short_side < stored)
    if not smaller:
        return None
    side, name = smaller[0]
    return (f"--dataset_config={name} (stored at {side} px instead of {stored}: fewer pixels to decode for "
            f"{config.input_size}-px crops; build it first with tfds build --config={name})")


def verdict(config: Config, measured: Measured, without_cache: bool) -> Result:
    """input-bound (warn, with the fixes) when a phase's steps take more images a second than the input makes;
    compute-bound otherwise (warn when the input's lead is under ROOMY, the host's other work eats into it)."""
    if not measured.phases:
        return ok("throughput", f"input {measured.input:.0f} images/s; no phase trains on images (phase 1 on "
                                "cached embeddings only): nothing to feed")
    rates = ", ".join(f"{phase} steps {rate:.0f}" for phase, rate in measured.phases.items())
    heading = (f"input {measured.input:.0f} images/s{' (without the decoded-image cache)' * without_cache}, "
               f"{rates} images/s ({config.backbone}, batch {config.batch_size} per replica)")
    bound = [phase for phase, rate in measured.phases.items() if measured.input < rate]
    if bound:
        return warn("throughput", f"{heading}: input-bound in {' and '.join(bound)}, the steps would wait for "
                                  f"data; try {'; '.join(fixes(config, measured, bound))}")
    lead = measured.input / max(measured.phases.values())
    if lead < ROOMY:
        return warn("throughput", f"{heading}: compute-bound, but the input is only {lead:.2f}x the fastest "
                                  "steps and shares the host with them during training: watch the run's "
                                  "input_wait column")
    return ok("throughput", f"{heading}: compute-bound, the input makes {lead:.1f}x what the steps take")


def check(config: Config, strategy: tf.distribute.Strategy, budget: Budget) -> Result:
    return verdict(config, *measure(config, strategy, budget))
