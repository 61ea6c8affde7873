"""The Keras callbacks of one phase: backup for resuming, early stopping and best checkpoint on validation
macro-F1, CSV and TensorBoard logs, and the per-epoch hook the tuner prunes with."""

import importlib.util
import shutil
from collections.abc import Callable, Sequence

import keras
import pandas as pd

from trainer.run_dir import RunFiles

# TensorFlow's summary writer needs the tensorboard package, which TensorFlow does not require.
TENSORBOARD_INSTALLED = importlib.util.find_spec("tensorboard") is not None

EpochHook = Callable[[int, float], None]
"""Called after every epoch with (global epoch number across phases, validation macro-F1)."""


def best_logged(history: pd.DataFrame, monitor: str) -> float | None:
    """The best validation macro-F1 logged so far (None before the first epoch): the bar a checkpoint of a
    later phase, or of a restarted one, must clear."""
    if history.empty or monitor not in history:
        return None
    return float(history[monitor].max())


def phase_callbacks(files: RunFiles, phase: str, monitor: str, *, checkpoint: bool, constant_rate: bool,
                    patience: int, plateau_patience: int, best_so_far: float | None, first_step: int,
                    on_epoch_end: EpochHook | None, extra: Sequence[keras.callbacks.Callback],
                    scratch: RunFiles | None = None, barrier: Callable[[], None] | None = None
                    ) -> list[keras.callbacks.Callback]:
    """BackupAndRestore first, so an epoch counts as done only once its state is saved.

    checkpoint: whether the model being fit is the full model (a cached phase fits the head alone, whose
    weights file would not load into the full model; train.py saves the full model after it instead).
    first_step: epochs completed in earlier phases, so the hook's epoch numbers keep increasing.
    scratch, barrier: for a multi-worker run (trainer/run_dir.py). Every worker gets the callbacks that save
    (saving runs collective ops) or decide when to stop, all from the same agreed values and logs; barrier is
    called by every worker before the chief deletes the phase's backup. scratch is set on non-chief workers
    only: they restore from the chief's backup but save into scratch, deleted after every epoch, and write no
    logs.
    """
    if scratch is None:
        files.csv_log(phase).parent.mkdir(parents=True, exist_ok=True)
        callbacks = [SharedBackupAndRestore(str(files.backup(phase)), barrier=barrier)]
    else:
        callbacks = [SharedBackupAndRestore(str(files.backup(phase)), restore_only=True, barrier=barrier),
                     keras.callbacks.BackupAndRestore(str(scratch.backup(phase)))]
    callbacks.append(keras.callbacks.EarlyStopping(monitor, mode="max", patience=patience,
                                                   restore_best_weights=True, verbose=1))
    if scratch is None:
        callbacks.append(keras.callbacks.CSVLogger(str(files.csv_log(phase)), append=True))
        if TENSORBOARD_INSTALLED:
            callbacks.append(keras.callbacks.TensorBoard(str(files.tensorboard(phase))))
    if checkpoint:
        best_weights = (scratch or files).best_weights
        best_weights.parent.mkdir(parents=True, exist_ok=True)
        callbacks.append(keras.callbacks.ModelCheckpoint(
            str(best_weights), monitor=monitor, mode="max", save_best_only=True, save_weights_only=True,
            initial_value_threshold=best_so_far, verbose=1 if scratch is None else 0))
    if scratch is not None:
        callbacks.append(RemoveAfterEpoch(scratch.model_dir))
    if constant_rate:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor, mode="max", factor=0.5,
                                                           patience=plateau_patience, verbose=1))
    if on_epoch_end is not None:
        callbacks.append(keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: on_epoch_end(first_step + epoch + 1, float(logs[monitor]))))
    return callbacks + list(extra)


class SharedBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore that several workers can share (on one machine it is the plain callback).

    restore_only: restores at the start of fit from backup_dir (the chief's) but never writes to it; a
      non-chief worker saves its own state elsewhere.
    barrier: called at the end of fit before the backup is deleted, so that no worker that started with zero
      epochs left (a phase killed after its last backup) is still reading it.
    """

    def __init__(self, backup_dir: str, restore_only: bool = False, barrier: Callable[[], None] | None = None):
        super().__init__(backup_dir)
        self.restore_only, self.barrier = restore_only, barrier

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
