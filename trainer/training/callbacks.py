"""The Keras callbacks of one phase: backup for resuming, the stop on a non-finite loss, early stopping and best
checkpoint on validation macro-F1, CSV and TensorBoard logs, the progress shown (console.py), and the per-epoch
hook the tuner prunes with."""

import dataclasses
import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence

import keras
import pandas as pd

from trainer import cli
from trainer.training import console, tensorboard_log
from trainer.training.run_dir import RunFiles, replace_atomically, write_atomically

EpochHook = Callable[[int, float], None]
"""Called after every epoch with (global epoch number across phases, validation macro-F1)."""


def best_logged(history: pd.DataFrame, monitor: str) -> float | None:
    """The best validation macro-F1 logged so far (None before the first epoch): the bar a checkpoint of a
    later phase, or of a restarted one, must clear."""
    if history.empty or monitor not in history:
        return None
    return float(history[monitor].max())


class NonFiniteLossError(cli.UserError):
    """Training produced a NaN or infinite loss; the message is the one line shown (the run's failure.json has
    the details)."""


@dataclasses.dataclass(frozen=True)
class PhaseRules:
    """How one phase is watched: the monitored metric, whether the fit model is the full one (a cached phase
    fits the head alone, whose weights file would not load into the full model: train.py saves the full model
    after it instead), the stopping and plateau rules, the best value logged before it, and the epochs earlier
    phases completed (so the hook's epoch numbers keep increasing)."""

    phase: str
    monitor: str
    checkpoint: bool
    constant_rate: bool
    patience: int
    plateau_patience: int
    best_so_far: float | None
    first_step: int
    input_wait: keras.callbacks.Callback | None = None  # input_wait.InputWait, writes its column before the CSV
    epochs: int = 0
    progress: str = "line"  # bar, line or none (console.progress_mode)
    ema: bool = False  # --ema: the optimizer's weight average is what validation and the checkpoints see


@dataclasses.dataclass(frozen=True)
class RunHooks:
    """What the run lends every phase: on_epoch_end(step, value) (the tuner's pruning report), extra callbacks,
    restart (loads the best checkpoint again; called when the resume state cannot be read and is set aside),
    and for a multi-worker run (trainer/training/run_dir.py) scratch and barrier. Every worker gets the
    callbacks that save (saving runs collective ops) or decide when to stop, all from the same agreed values
    and logs; barrier is called by every worker before the chief deletes the phase's backup. scratch is set on
    non-chief workers only: they restore from the chief's backup but save into scratch, deleted after every
    epoch, and write no logs."""

    restart: Callable[[], None]
    on_epoch_end: EpochHook | None = None
    extra: Sequence[keras.callbacks.Callback] = ()
    scratch: RunFiles | None = None
    barrier: Callable[[], None] | None = None


def phase_callbacks(files: RunFiles, rules: PhaseRules, hooks: RunHooks) -> list[keras.callbacks.Callback]:
    """BackupAndRestore first, so an epoch counts as done only once its state is saved; the non-finite guard
    right after it, so a NaN epoch is never backed up, logged as best or checkpointed."""
    phase, monitor, scratch = rules.phase, rules.monitor, hooks.scratch
    if scratch is None:
        files.csv_log(phase).parent.mkdir(parents=True, exist_ok=True)
        callbacks = [SharedBackupAndRestore(str(files.backup(phase)), hooks.restart, barrier=hooks.barrier)]
    else:
        callbacks = [SharedBackupAndRestore(str(files.backup(phase)), hooks.restart, restore_only=True,
                                            barrier=hooks.barrier),
                     keras.callbacks.BackupAndRestore(str(scratch.backup(phase)))]
    callbacks.append(StopOnNonFiniteLoss(files if scratch is None else None, phase, rules.first_step))
    if rules.ema:
        # After the backups (raw weights + the optimizer's average: a resume continues the same average), before
        # every callback that judges or saves the epoch's weights (trainer/training/recipe.py).
        callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    if rules.progress == "bar":
        # Ahead of every callback that prints at the end of an epoch: the bar is finished before their lines.
        callbacks.append(keras.callbacks.ProgbarLogger())
    callbacks.append(keras.callbacks.EarlyStopping(monitor, mode="max", patience=rules.patience,
                                                   restore_best_weights=True, verbose=1))
    if scratch is None:
        callbacks += [rules.input_wait] if rules.input_wait is not None else []
        callbacks.append(keras.callbacks.CSVLogger(str(files.csv_log(phase)), append=True))
        callbacks.append(tensorboard_log.EpochScalars(files.tensorboard, rules.first_step))
    checkpoint = None
    if rules.checkpoint:
        checkpoint = BestCheckpoint((scratch or files).best_weights, monitor, rules.best_so_far,
                                    verbose=scratch is None and rules.progress == "bar")
        callbacks.append(checkpoint)
    if scratch is not None:
        callbacks.append(RemoveAfterEpoch(scratch.model_dir))
    if rules.constant_rate:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor, mode="max", factor=0.5,
                                                           patience=rules.plateau_patience, verbose=1))
    if hooks.on_epoch_end is not None:
        on_epoch_end, first_step = hooks.on_epoch_end, rules.first_step
        callbacks.append(keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: on_epoch_end(first_step + epoch + 1, float(logs[monitor]))))
    if rules.progress == "line":
        callbacks.append(console.EpochLines(phase, rules.epochs, rules.first_step,
                                            None if checkpoint is None else checkpoint.saved_now))
    return callbacks + list(hooks.extra)


class SharedBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore, kept double (`double_checkpoint`: a state killed while it was written falls back
    to the one before), set aside when neither can be read, and shareable by several workers.

    restart: loads the best checkpoint again after an unreadable state was set aside (the phase then starts over
      from it, with one warning line, instead of failing every rerun).
    restore_only: restores at the start of fit from backup_dir (the chief's) but never writes to it; a
      non-chief worker saves its own state elsewhere.
    barrier: called at the end of fit before the backup is deleted, so that no worker that started with zero
      epochs left (a phase killed after its last backup) is still reading it.
    """

    def __init__(self, backup_dir: str, restart: Callable[[], None], restore_only: bool = False,
                 barrier: Callable[[], None] | None = None):
        super().__init__(backup_dir, double_checkpoint=True)
        self.restart, self.restore_only, self.barrier = restart, restore_only, barrier

    def on_train_begin(self, logs=None):
        try:
            super().on_train_begin(logs)
        except (OSError, ValueError) as error:  # h5py's unreadable file; a torn training_metadata.json
            reason = " ".join(str(error).split())[:200]
            if self.restore_only:
                print(f"warning: resume state {self.backup_dir} unreadable ({reason}); starting the phase over "
                      "from the best checkpoint", file=sys.stderr)
            else:
                aside = f"{self.backup_dir}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}"
                shutil.move(self.backup_dir, aside)
                print(f"warning: resume state {self.backup_dir} unreadable ({reason}); set aside as {aside}, the "
                      "phase starts over from the best checkpoint", file=sys.stderr)
            self.restart()

    def on_epoch_end(self, epoch, logs=None):
        if not self.restore_only:
            super().on_epoch_end(epoch, logs)

    def on_train_batch_end(self, batch, logs=None):
        if not self.restore_only:
            super().on_train_batch_end(batch, logs)

    def on_train_end(self, logs=None):
        if self.barrier is not None:
            self.barrier()
        if not self.restore_only:
            super().on_train_end(logs)


class RemoveAfterEpoch(keras.callbacks.Callback):
    """Deletes a non-chief worker's scratch directory once the epoch's saves into it are done."""

    def __init__(self, directory):
        super().__init__()
        self.directory = directory

    def on_epoch_end(self, epoch, logs=None):
        shutil.rmtree(self.directory, ignore_errors=True)

    def on_train_end(self, logs=None):
        shutil.rmtree(self.directory, ignore_errors=True)


class BestCheckpoint(keras.callbacks.Callback):
    """Keras' ModelCheckpoint(monitor, mode="max", save_best_only=True, save_weights_only=True,
    initial_value_threshold=best_so_far), but each file written whole before it replaces the previous best
    (run_dir.replace_atomically): a kill while saving leaves the last best checkpoint readable, which Keras'
    callback, writing in place, does not.

    Every worker of a multi-worker run saves (saving runs collective ops), each to its own path, on the same
    epochs: the decision depends only on the epoch's logs, which are the same everywhere.
    """

    def __init__(self, path, monitor: str, best_so_far: float | None, verbose: bool = True):
        super().__init__()
        self.path, self.monitor, self.best, self.verbose = path, monitor, best_so_far, verbose
        self.epoch = self.saved_epoch = None

    def saved_now(self) -> bool:
        """Whether the epoch that just ended was saved as the new best (console.EpochLines marks it)."""
        return self.saved_epoch is not None and self.saved_epoch == self.epoch

    def on_epoch_end(self, epoch, logs=None):
        self.epoch = epoch
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(value) or (self.best is not None and value <= self.best):
            return
        before, self.best = self.best, float(value)
        replace_atomically(self.path, lambda partial: self.model.save_weights(partial), suffix=".weights.h5")
        self.saved_epoch = epoch
        if self.verbose:
            was = "" if before is None else f" from {before:.5f}"
            print(f"Epoch {epoch + 1}: {self.monitor} improved{was} to {value:.5f}, saved {self.path}")


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops the run at the first NaN or infinite training loss, before the batch's state is backed up or the
    epoch logged: the best checkpoint and the resume state stay as they were. Writes the phase, epoch, step and
    loss to failure.json (files=None on non-chief workers) and raises NonFiniteLossError, one line naming the
    likely causes; in the tuner that trial is FAIL with that line and the study goes on."""

    def __init__(self, files: RunFiles | None, phase: str, first_step: int):
        super().__init__()
        self.files, self.phase, self.first_step, self.epoch = files, phase, first_step, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        failure = {"reason": "non-finite training loss", "loss": str(float(loss)), "phase": self.phase,
                   "epoch": self.epoch + 1, "step": batch + 1, "run_epoch": self.first_step + self.epoch + 1}
        where = ""
        if self.files is not None:
            write_atomically(self.files.failure, json.dumps(failure, indent=2))
            where = f"; details in {self.files.failure}"
        rate = "phase1_learning_rate" if self.phase == "phase1" else "phase2_learning_rate"
        raise NonFiniteLossError(
            f"the training loss became {failure['loss']} in {self.phase} epoch {failure['epoch']} step "
            f"{failure['step']}: lower --{rate}, try --mixed_precision=none, or compare --strategy=one_device "
            f"with several replicas; the best checkpoint and the resume state were kept{where}")
