"""The share of each epoch's step time spent waiting for the input: written to the phase's CSV log (column
`input_wait`, read back by RunFiles.history) and worth one warning line once it passes WARN_SHARE.

Keras 3 takes the next batch inside its compiled train function (`iterator.get_next()` in a tf.function), where
no Python callback can time it, and under a tf.distribute strategy it reads the dataset through a per-device
prefetcher: a clock inside tf.data measures that prefetcher's waits, not the step's (measured: 0.99 of the time
where the step waited 0.5; BUILD-notes.md). So the two ends are timed apart, on the same wall clock:
  - the dataset's last stage writes, for element i of its iterator, the instant it handed the element on
    (`tf.timestamp()`, into a ring of SLOTS slots in host variables);
  - a callback notes when Keras starts step k (on_train_batch_begin) and, once the step is done (its loss read),
    counts max(0, handed_k - started_k) as step k's wait.
A batch handed on before its step began cost no wait; one handed on after had the step waiting for it. The copy
to the device after the hand-over is not counted. The first step of every fit is left out of the share (its
wait is the pipeline's start: the shuffle buffer, or the whole first decode that fills the training cache).
"""

import math
import pathlib
import sys
import time

import keras
import tensorflow as tf

COLUMN = "input_wait"
WARN_SHARE = 0.10
SLOTS = 256  # far more than the batches any prefetcher holds between the dataset and the step


def clock_allowed() -> bool:
    """Whether tf.timestamp runs here: TensorFlow refuses it once op determinism is on, and has no public way to
    ask whether it is."""
    try:
        tf.timestamp()
    except tf.errors.FailedPreconditionError:
        return False
    return True


class InputWait(keras.callbacks.Callback):
    """Measures one fit: `probed(dataset)` feeds it, the callback computes the share per epoch into the epoch's
    logs (before the CSVLogger writes them) and prints one warning line the first time it passes WARN_SHARE.

    A dataset it cannot probe (a multi-worker run's, or any under --deterministic) leaves the column empty (NaN).
    log: the phase's CSV log; one an earlier version started without the column gets none (Keras' CSVLogger
    appends rows under the header it finds, so a longer row would make the file unreadable)."""

    def __init__(self, phase: str, log: pathlib.Path | None = None, warn_share: float = WARN_SHARE):
        super().__init__()
        self.phase, self.log, self.warn_share, self.warned, self.active = phase, log, warn_share, False, False
        self.logged = True
        with tf.init_scope(), tf.device("/cpu:0"):
            self.handed = tf.Variable(tf.fill([SLOTS], tf.constant(-1.0, tf.float64)), trainable=False)
            self.indices = tf.Variable(tf.fill([SLOTS], tf.constant(-1, tf.int64)), trainable=False)
        self.step = self.started = 0
        self.waited = self.timed = 0.0

    def probed(self, dataset):
        """dataset with its hand-over instants recorded; anything but a tf.data.Dataset is returned as is, and so
        is every dataset under --deterministic (TensorFlow refuses tf.timestamp under op determinism)."""
        if not isinstance(dataset, tf.data.Dataset) or not clock_allowed():
            return dataset
        self.active = True
        handed, indices = self.handed, self.indices

        def stamp(index, element):
            slot = index % SLOTS
            with tf.control_dependencies([handed[slot].assign(tf.timestamp()), indices[slot].assign(index)]):
                return tf.nest.map_structure(tf.identity, element)

        options = tf.data.Options()
        # tf.data would otherwise add a prefetch after the stamp, which then times that buffer, not the step.
        options.experimental_optimization.inject_prefetch = False
        return dataset.enumerate().map(stamp).with_options(options)

    def on_train_begin(self, logs=None):
        self.step = 0  # one iterator per fit: the dataset is infinite and fit takes steps_per_epoch
        if self.log is not None and self.log.exists():
            with open(self.log) as written:
                header = written.readline().strip()
            self.logged = not header or COLUMN in header.split(",")

    def on_epoch_begin(self, epoch, logs=None):
        self.waited = self.timed = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self.started = time.time()

    def on_train_batch_end(self, batch, logs=None):
        if not self.active:
            return
        float((logs or {}).get("loss", 0.0))  # waits for the step to finish on the devices
        ended, step = time.time(), self.step
        self.step += 1
        slot = step % SLOTS
        if step == 0 or int(self.indices[slot].numpy()) != step:
            return
        self.waited += min(max(0.0, float(self.handed[slot].numpy()) - self.started), ended - self.started)
        self.timed += ended - self.started

    def on_epoch_end(self, epoch, logs=None):
        share = self.waited / self.timed if self.active and self.timed > 0 else math.nan
        if logs is not None and self.logged:
            logs[COLUMN] = share
        if share > self.warn_share and not self.warned:
            self.warned = True
            print(f"warning: {self.phase} epoch {epoch + 1} waited for its input {share:.0%} of its step time: "
                  "the accelerators are not fed; see what `python -m trainer.doctor` advises for these flags",
                  file=sys.stderr, flush=True)
