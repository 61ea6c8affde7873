"""The Keras callbacks of one phase: backup for resuming, early stopping and best checkpoint on validation
macro-F1, CSV and TensorBoard logs, and the per-epoch hook the tuner prunes with."""

import importlib.util
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
                    on_epoch_end: EpochHook | None, extra: Sequence[keras.callbacks.Callback]
                    ) -> list[keras.callbacks.Callback]:
    """BackupAndRestore first, so an epoch counts as done only once its state is saved.

    checkpoint: whether the model being fit is the full model (a cached phase fits the head alone, whose
    weights file would not load into the full model; train.py saves the full model after it instead).
    first_step: epochs completed in earlier phases, so the hook's epoch numbers keep increasing.
    """
    files.csv_log(phase).parent.mkdir(parents=True, exist_ok=True)
    callbacks = [
        keras.callbacks.BackupAndRestore(str(files.backup(phase))),
        keras.callbacks.EarlyStopping(monitor, mode="max", patience=patience, restore_best_weights=True,
                                      verbose=1),
        keras.callbacks.CSVLogger(str(files.csv_log(phase)), append=True),
    ]
    if TENSORBOARD_INSTALLED:
        callbacks.append(keras.callbacks.TensorBoard(str(files.tensorboard(phase))))
    if checkpoint:
        files.best_weights.parent.mkdir(parents=True, exist_ok=True)
        callbacks.append(keras.callbacks.ModelCheckpoint(
            str(files.best_weights), monitor=monitor, mode="max", save_best_only=True, save_weights_only=True,
            initial_value_threshold=best_so_far, verbose=1))
    if constant_rate:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor, mode="max", factor=0.5,
                                                           patience=plateau_patience, verbose=1))
    if on_epoch_end is not None:
        callbacks.append(keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: on_epoch_end(first_step + epoch + 1, float(logs[monitor]))))
    return callbacks + list(extra)

