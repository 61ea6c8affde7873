"""What a run prints: a start header saying what is about to train where, a line naming where a resumed phase
picks up, and the epochs' progress, as Keras' bars on a terminal or one plain line per epoch in a file.

Keras' progress bar writes terminal escapes (colours, carriage returns) whether or not its output is a
terminal, so a batch job's log would fill with them: `--progress=auto` shows the bar only on a terminal and one
plain line per epoch otherwise; `line`, `bar` and `none` force a choice.
"""

import math
import sys
import time
from collections.abc import Mapping, Sequence

import keras
import tensorflow as tf

import pipelines
from trainer.training import distribute
from trainer.training.config import Config


def progress_mode(requested: str, stream=None) -> str:
    """bar, line or none: auto is bar when stream (stdout) is a terminal, else line."""
    if requested != "auto":
        return requested
    stream = sys.stdout if stream is None else stream
    return "bar" if getattr(stream, "isatty", lambda: False)() else "line"


def number(value: float) -> str:
    """A metric as a person reads it: 4 decimals in 0..1 and around it, else 4 significant digits."""
    if value is None or not math.isfinite(value):
        return str(value)
    return f"{value:.4f}" if abs(value) >= 1e-3 and abs(value) < 100 else f"{value:.4g}"


def start_header(config: Config, strategy: tf.distribute.Strategy, info: pipelines.DatasetInfo,
                 steps: int) -> str:
    """What is about to train, on what, where: printed before the first phase (steps: per epoch)."""
    replicas = strategy.num_replicas_in_sync
    global_batch = config.batch_size * replicas
    rank, heads = config.label_rank, config.head_ranks

    def peak(rate: float) -> float:
        return distribute.scaled_learning_rate(rate, global_batch, config.lr_scaling, config.reference_batch_size)

    rows = [
        ("dataset", f"{info.full_name} in {config.data_dir}"),
        ("splits", split_sizes(info.num_examples, (config.train_split, config.validation_split,
                                                   config.test_split))),
        ("labels", f"{rank}: {len(info.names[rank])} names" + (f"; heads {','.join(heads)}" if len(heads) > 1
                                                                 else "")),
        ("model", f"{config.backbone} at {config.input_size} px, weights {config.weights}"),
        ("devices", f"{distribute.public_name(strategy)}, {replicas} replica{'s' * (replicas > 1)} on "
                    f"{', '.join(strategy.extended.worker_devices)}"),
        ("batch", f"{global_batch} global ({config.batch_size} per replica), {steps} steps per epoch"),
        *[(phase, f"{epochs} epoch{'s' * (epochs != 1)} at peak learning rate {number(peak(rate))}{note}")
          for phase, epochs, rate, note in phase_plan(config) if epochs],
        ("model_dir", config.model_dir),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(["rare-species training run", *(f"  {name:<{width}}  {value}" for name, value in rows)])


def phase_plan(config: Config) -> list[tuple[str, int, float, str]]:
    """(phase, epochs, learning rate at --reference_batch_size, what it trains) of each phase."""
    unfrozen = ("all backbone layers" if config.unfreeze_layers < 0
                else f"the last {config.unfreeze_layers} backbone layers")
    return [
        ("phase1", config.phase1_epochs, config.phase1_learning_rate,
         ", the head alone" + (" on cached embeddings" if config.phase1_cached_features else "")),
        ("phase2", config.phase2_epochs, config.phase2_learning_rate, f", the head and {unfrozen}"),
        ("oversample", config.oversample_epochs, config.phase2_learning_rate,
         f", {config.label_rank} names under validation F1 "
         f"{config.oversample_f1_threshold} drawn more often"),
    ]


def split_sizes(examples: Mapping[str, int], splits: Sequence[str]) -> str:
    """'train 8,387, validation 1,798' for the splits named: a sum like train+validation is added up from its
    parts; a slice like train[:50%] is named without a size."""
    def sized(split: str) -> str:
        parts = split.split("+")
        if all(part in examples for part in parts):
            return f"{split} {sum(examples[part] for part in parts):,}"
        return split
    return ", ".join(sized(split) for split in splits if split)


def learning_rate(model: keras.Model) -> float | None:
    """The optimizer's learning rate now (its schedule at the current step); None before compile."""
    optimizer = getattr(model, "optimizer", None)
    return None if optimizer is None else float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class EpochLines(keras.callbacks.Callback):
    """One plain line per epoch, after the epoch's other callbacks have written their logs:

        phase2 epoch 3/20 (run epoch 13)  loss 1.2345  macro_f1 0.4120  val_loss ...  lr 2.9e-05  41.2s  best, saved

    saved: a callable telling whether the best checkpoint was written this epoch (BestCheckpoint.saved_now)."""

    def __init__(self, phase: str, epochs: int, first_step: int, saved=None):
        super().__init__()
        self.phase, self.epochs, self.first_step, self.saved = phase, epochs, first_step, saved
        self.started = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        ordered = sorted(logs, key=lambda key: (key.startswith("val_"), key != "loss", key))
        values = "  ".join(f"{key} {number(float(logs[key]))}" for key in ordered)
        rate = learning_rate(self.model)
        values += "" if rate is None else f"  lr {rate:.3g}"
        mark = "  best, saved" if self.saved is not None and self.saved() else ""
        print(f"{self.phase} epoch {epoch + 1}/{self.epochs} (run epoch {self.first_step + epoch + 1})  {values}  "
              f"{time.monotonic() - self.started:.1f}s{mark}", flush=True)
