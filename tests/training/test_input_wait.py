"""The input-wait share every run writes to its history (trainer/training/input_wait.py): present for every epoch
of every phase, near zero when the input keeps up, and over the warning's threshold, with its one warning line
per phase, when a sleep in the training pipeline makes every step wait."""

import math
import pathlib
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from tests.training.test_end_to_end import tiny_config
from trainer.training import input_wait, inputs, train
from trainer.training.run_dir import RunFiles

SLEEP = 0.15  # seconds per training batch when slowed: far longer than a step of the tiny model


def slowed(dataset_function):
    """inputs.dataset with a sleep in a map after every training batch."""

    def sleep(flag):
        time.sleep(SLEEP)
        return flag

    def dataset(strategy, cfg, split, training):
        batches = dataset_function(strategy, cfg, split, training)
        if not training:
            return batches
        return batches.map(lambda *batch: (tf.py_function(sleep, [tf.constant(True)], tf.bool), batch)[1])

    return dataset


def run_history(config):
    train.run(config)
    return RunFiles(pathlib.Path(config.model_dir)).history(train.PHASES)


def warnings_in(text: str) -> list[str]:
    return [line for line in text.splitlines() if "waited for its input" in line]


def test_every_epoch_of_every_phase_logs_its_input_wait(tiny_data_dir, tmp_path, capsys):
    history = run_history(tiny_config(tiny_data_dir, tmp_path / "run", phase1_epochs=2, phase2_epochs=2,
                                      steps_per_epoch=6, phase1_cached_features=True))
    assert list(history["phase"]) == ["phase1"] * 2 + ["phase2"] * 2
    assert history[input_wait.COLUMN].between(0.0, 1.0).all(), history[input_wait.COLUMN]


def test_a_slowed_pipeline_waits_most_of_each_step_and_warns_once_per_phase(tiny_data_dir, tmp_path, capsys,
                                                                            monkeypatch):
    monkeypatch.setattr(inputs, "dataset", slowed(inputs.dataset))
    history = run_history(tiny_config(tiny_data_dir, tmp_path / "run", phase1_epochs=2, phase2_epochs=2,
                                      steps_per_epoch=4))
    shares = history[input_wait.COLUMN]
    assert (shares > 0.5).all(), shares  # each step waits ~SLEEP for a step of a few milliseconds
    lines = warnings_in(capsys.readouterr().err)
    assert [line.split()[1] for line in lines] == ["phase1", "phase2"], lines
    assert "trainer.doctor" in lines[0]


def test_a_dataset_it_cannot_probe_is_returned_as_is_and_logs_nan():
    measure, other = input_wait.InputWait("phase1"), object()
    assert measure.probed(other) is other
    logs = {}
    measure.on_epoch_begin(0)
    measure.on_epoch_end(0, logs)
    assert math.isnan(logs[input_wait.COLUMN])


def test_steps_whose_batch_was_ready_count_no_wait():
    """The wait is the hand-over instant minus the step's start, never negative, never longer than the step."""
    measure = input_wait.InputWait("phase2")
    batches = measure.probed(tf.data.Dataset.range(100).batch(2))
    iterator = iter(batches)
    measure.on_train_begin()
    measure.on_epoch_begin(0)
    for _ in range(4):
        next(iterator)  # handed over before the step starts: ready
        measure.on_train_batch_begin(0)
        time.sleep(0.01)
        measure.on_train_batch_end(0, {"loss": 1.0})
    logs = {}
    measure.on_epoch_end(0, logs)
    assert logs[input_wait.COLUMN] == pytest.approx(0.0, abs=1e-6)


def test_a_log_an_earlier_version_started_without_the_column_stays_readable(tmp_path):
    """Keras' CSVLogger appends under the header it finds: a row with one more field would break the file."""
    log = tmp_path / "phase2.csv"
    log.write_text("epoch,loss\n0,1.0\n")
    measure, logs = input_wait.InputWait("phase2", log), {"loss": 0.9}
    measure.on_train_begin()
    measure.on_epoch_begin(1)
    measure.on_epoch_end(1, logs)
    assert input_wait.COLUMN not in logs
    fresh = input_wait.InputWait("phase2", tmp_path / "none_yet.csv")
    fresh.on_train_begin()
    fresh.on_epoch_end(0, logs)
    assert input_wait.COLUMN in logs


def test_under_op_determinism_the_dataset_is_left_alone(monkeypatch):
    """TensorFlow refuses tf.timestamp when op determinism is on (--deterministic): no probe, an empty column."""
    monkeypatch.setattr(input_wait, "clock_allowed", lambda: False)
    batches = tf.data.Dataset.range(4)
    assert input_wait.InputWait("phase1").probed(batches) is batches


_DETERMINISTIC = """
import tensorflow as tf
from trainer.training import input_wait
assert input_wait.clock_allowed()
tf.config.experimental.enable_op_determinism()
print(input_wait.clock_allowed())
"""


def test_op_determinism_is_detected_by_trying_the_clock():
    done = subprocess.run([sys.executable, "-c", _DETERMINISTIC], cwd=pathlib.Path(__file__).parents[2],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
