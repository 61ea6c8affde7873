"""The doctor's throughput check (trainer/preflight/throughput.py): a training input slowed on purpose (a sleep in
a map) is input-bound, with the fixes that apply to the flags; an input far faster than the steps is
compute-bound; the verdict names each phase that reads images; bad budgets are refused as flags."""

import time

import pytest
import tensorflow as tf
from absl import flags

from trainer import cli
from trainer.preflight import checkup, parity, report, settings, throughput
from trainer.training import config as config_lib

# The baseline CNN at 64 px, phase 1 on images (so --phase1_cached_features is a fix), phase 2 on every layer.
FLAGS = ["--flagfile=configs/demo.flags", "--nophase1_cached_features", "--augment=recipe", "--train_cache_gib=0"]
BUDGET = throughput.Budget(seconds=1.0, steps=2)


@pytest.fixture
def config(tiny_data_dir, tmp_path):
    return config_lib.parse([*FLAGS, f"--data_dir={tiny_data_dir}", f"--model_dir={tmp_path / 'run'}"])


@pytest.fixture(scope="module")
def strategy():
    return tf.distribute.OneDeviceStrategy("/cpu:0")


def test_a_pipeline_slowed_on_purpose_is_input_bound_with_the_fixes_for_these_flags(config, strategy,
                                                                                      monkeypatch):
    real = throughput.training_input

    def slowed(config, strategy):
        batches, cached = real(config, strategy)
        def sleep():
            time.sleep(0.3)
            return True

        return batches.map(lambda *batch: (tf.py_function(sleep, [], tf.bool), batch)[1]), cached

    monkeypatch.setattr(throughput, "training_input", slowed)
    result = throughput.check(config, strategy, BUDGET)
    assert result.status == report.WARN, result.line()
    assert "input-bound in phase1 and phase2" in result.message
    for fix in ("--phase1_cached_features", "--train_cache_gib=1", "--augment_on_device", "more host cores"):
        assert fix in result.message, fix
    assert "--dataset_config" not in result.message  # small_128 is already the smallest stored size for 64 px


def test_an_input_far_faster_than_the_steps_is_compute_bound(config, strategy, monkeypatch):
    monkeypatch.setattr(throughput, "training_input", lambda config, strategy: (
        parity.generated_batches(config, config.batch_size, 1), False))
    result = throughput.check(config, strategy, BUDGET)
    assert result.status == report.OK, result.line()
    assert "compute-bound" in result.message and "phase1 steps" in result.message


def test_the_verdict_names_only_the_phases_the_input_cannot_feed(config):
    result = throughput.verdict(config, throughput.Measured(500.0, {"phase1": 900.0, "phase2": 300.0}), True)
    assert result.status == report.WARN and "input-bound in phase1," in result.message
    assert "(without the decoded-image cache)" in result.message
    assert "more host cores: about" in result.message


def test_an_input_barely_ahead_is_compute_bound_with_a_warning(config):
    result = throughput.verdict(config, throughput.Measured(110.0, {"phase2": 100.0}), False)
    assert result.status == report.WARN and "compute-bound, but the input is only 1.10x" in result.message


def test_phase1_on_cached_embeddings_reads_no_images(config):
    cached = config_lib.parse([*FLAGS, "--phase1_cached_features", "--phase2_epochs=0", "--oversample_epochs=0",
                               f"--data_dir={config.data_dir}", f"--model_dir={config.model_dir}"])
    assert throughput.phases_reading_images(cached) == {}
    assert throughput.verdict(cached, throughput.Measured(10.0, {}), False).status == report.OK


@pytest.mark.parametrize("flag", ["--throughput_seconds=0", "--throughput_seconds=abc", "--throughput_steps=0"])
def test_a_budget_out_of_range_is_refused_as_a_flag(flag):
    with pytest.raises(flags.IllegalFlagValueError):
        cli.parse([flag], settings.DoctorSettings)


def test_skipped_or_blocked_it_says_why_and_measures_nothing(config, strategy):
    skipped = checkup._throughput(config, settings.DoctorSettings(skip_throughput=True), strategy,
                                  report.ok("devices", ""), report.ok("dataset", ""))
    assert skipped.status == report.WARN and "--skip_throughput" in skipped.message
    blocked = checkup._throughput(config, settings.DoctorSettings(), strategy, report.ok("devices", ""),
                                  report.fail("dataset", "not built"))
    assert blocked.status == report.WARN and "fix the dataset FAIL above first" in blocked.message
