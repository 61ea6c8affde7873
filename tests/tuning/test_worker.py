"""The worker in this process: pruning, a trial that raises, one console line per trial (what a trial prints
goes to its trial_NNNN.log), no test figure anywhere, and Ctrl-C / SIGTERM in the middle of a trial (queued again,
then resumed from its run directory, or started over when that run cannot be resumed)."""

import contextlib
import io
import json
import pathlib
import re

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from tests.conftest import once
from tests.tuning.common import BAD, GOOD, journal_study, tune_args
from trainer import tune
from trainer.training import train
from trainer.training.config import Config
from trainer.tuning import study as study_lib
from trainer.tuning.settings import Settings
from trainer.tuning.worker import trial_epochs, trial_log


@pytest.fixture(scope="module")
def pruned_and_failed(tiny_data_dir, shared_dir):
    """Trials 0 and 1 learn, trial 2 raises, trial 3 cannot learn (the median pruner has 2 finished trials)."""

    def make(tune_dir: pathlib.Path) -> dict:
        base, settings = tune.parse(tune_args(tiny_data_dir, tune_dir, "prune", "--n_trials=4", "--steps_per_epoch=8",
                                              "--phase1_epochs=4", "--early_stopping_patience=4", "--pruner=median",
                                              "--pruner_startup_trials=2", "--pruner_warmup_epochs=0"))
        handle = study_lib.open_study(study_lib.prepare_base(base, settings), settings)
        for params in (GOOD, {**GOOD, "phase1_learning_rate": 0.05}, GOOD, BAD):
            handle.study.enqueue_trial(params)
        real_run = train.run

        def flaky_run(config: Config, **kwargs):
            if config.model_dir.endswith("trial_0002"):
                raise RuntimeError("injected failure in trial 2")
            return real_run(config, **kwargs)

        console = io.StringIO()
        with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(console):
            patch.setattr(train, "run", flaky_run)
            outputs = tune.run(base, settings)
        return {"outputs": outputs, "study_dir": str(tune_dir / "prune"), "console": console.getvalue()}

    result = once(shared_dir, "tune_pruned_and_failed", make)
    return journal_study(pathlib.Path(result["study_dir"])), result["outputs"], result["console"]


@pytest.mark.xdist_group("tune_in_process")
def test_a_trial_that_cannot_learn_is_pruned(pruned_and_failed):
    study, _, _ = pruned_and_failed
    good = [study.trials[0], study.trials[1]]
    bad = study.trials[3]
    assert [trial.state for trial in good] == [TrialState.COMPLETE] * 2
    assert all(len(trial.intermediate_values) == 4 for trial in good)
    assert bad.params["phase1_learning_rate"] == BAD["phase1_learning_rate"]
    assert bad.state == TrialState.PRUNED
    step = max(bad.intermediate_values)
    assert step < 4  # stopped before its last epoch
    assert bad.intermediate_values[step] < min(trial.intermediate_values[step] for trial in good)


@pytest.mark.xdist_group("tune_in_process")
def test_a_failing_trial_is_recorded_and_the_study_goes_on(pruned_and_failed):
    study, outputs, _ = pruned_and_failed
    failed, after = study.trials[2], study.trials[3]
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs["error"] == "RuntimeError: injected failure in trial 2"
    assert after.datetime_start >= failed.datetime_complete
    assert len(study.trials) == 4 and outputs["best_trial"] in (0, 1)
    assert pathlib.Path(outputs["best_flags"]).exists()


@pytest.mark.xdist_group("tune_in_process")
def test_the_console_shows_one_line_per_trial_and_each_trial_logs_beside_its_directory(pruned_and_failed):
    study, _, console = pruned_and_failed
    lines = [line for line in console.splitlines() if line.startswith("tune: trial ")]
    assert len(lines) == len(study.trials) == 4
    for line, trial in zip(lines, study.trials):
        assert line.startswith(f"tune: trial {trial.number} {trial.state.name.lower()}")
        assert re.search(r"; (\d+) epochs, (\d+\.\d) min; ", line), line
        assert all(f"{name}=" in line for name in trial.params)
        assert f"{trial_epochs(trial)} epochs" in line
    assert f"validation macro-F1 {study.trials[0].value:.4f}" in lines[0]
    assert "RuntimeError: injected failure in trial 2" in lines[2] and "trial_0002.log" in lines[2]
    pruned = study.trials[3]
    assert (f"pruned at epoch {pruned.last_step}: validation macro-F1 "
            f"{pruned.intermediate_values[pruned.last_step]:.4f}") in lines[3]
    assert "(run epoch 1)" not in console and "Traceback" not in console  # epoch lines and tracebacks: in the logs
    logs = {trial.number: trial_log(pathlib.Path(trial.user_attrs["model_dir"])) for trial in study.trials}
    assert "evaluating the best checkpoint on validation" in logs[0].read_text()
    assert "Traceback" in logs[2].read_text() and "injected failure in trial 2" in logs[2].read_text()


@pytest.mark.xdist_group("tune_in_process")
def test_no_trial_reads_the_test_split(pruned_and_failed):
    """Model selection sees train and validation only: no test figure in the trials, the study, the trial
    directories, trials.csv or the console; best.flags names the test split for the retrain."""
    study, outputs, console = pruned_and_failed
    study_dir = pathlib.Path(outputs["study_dir"])
    assert not [key for trial in study.trials for key in trial.user_attrs if "test" in key]
    assert not [key for key in study.user_attrs if "test" in key]
    assert not [column for column in pd.read_csv(study_dir / "trials.csv").columns if "test" in column.lower()]
    for trial in study.trials:
        run_dir = pathlib.Path(trial.user_attrs["model_dir"])
        assert "evaluating the best checkpoint on test" not in trial_log(run_dir).read_text()
        if trial.state != TrialState.FAIL:  # trial 2 failed before train.run began
            assert "--test_split=\n" in (run_dir / "flags.txt").read_text()
        if trial.state == TrialState.COMPLETE:
            written = json.loads((run_dir / "metrics.json").read_text())
            assert "validation" in written and not [key for key in written if "test" in key]
    assert not [line for line in console.splitlines() if re.search(r"\btest(_F1)?\b.*\d\.\d{4}", line)]
    assert not re.search(r"test_?F1|final test +\d", console, re.IGNORECASE)  # no test column in the summary
    assert "--test_split=test" in (study_dir / "best.flags").read_text()


@pytest.mark.xdist_group("tune_in_process")
def test_trial_output_full_prints_what_the_trial_prints(tiny_data_dir, tmp_path):
    base, settings = tune.parse(tune_args(tiny_data_dir, tmp_path, "full", "--n_trials=1", "--trial_output=full"))
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        tune.run(base, settings)
    shown = console.getvalue()
    assert "(run epoch 1)" in shown and "evaluating the best checkpoint on validation" in shown
    assert [line for line in console.getvalue().splitlines() if line.startswith("tune: trial 0 complete")]
    assert not list((tmp_path / "full").glob("trial_*.log"))


def interrupt_first_trial(base: Config, settings: Settings, monkeypatch) -> list[optuna.trial.FrozenTrial]:
    """Runs the study with a Ctrl-C after the first epoch of its first trial; returns the trials then."""
    real_run = train.run

    def run_until_ctrl_c(config: Config, on_epoch_end=None, **kwargs):
        def hook(epoch: int, val_macro_f1: float):
            on_epoch_end(epoch, val_macro_f1)
            raise KeyboardInterrupt

        return real_run(config, on_epoch_end=hook, **kwargs)

    monkeypatch.setattr(train, "run", run_until_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        tune.run(base, settings)
    monkeypatch.setattr(train, "run", real_run)
    return journal_study(settings.study_dir).trials


@pytest.mark.xdist_group("tune_in_process")
def test_an_interrupted_trial_is_queued_again_and_resumes_its_run(tiny_data_dir, tmp_path, monkeypatch):
    base, settings = tune.parse(tune_args(tiny_data_dir, tmp_path, "interrupted", "--n_trials=1"))
    first = interrupt_first_trial(base, settings, monkeypatch)
    assert [trial.state for trial in first] == [TrialState.FAIL, TrialState.WAITING]
    assert first[0].user_attrs["error"].startswith("interrupted")

    tune.run(base, settings)
    trials = journal_study(tmp_path / "interrupted").trials
    assert [trial.state for trial in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].params == trials[0].params and "resume_failed" not in trials[1].user_attrs
    assert "error" not in trials[1].user_attrs  # the retry carries none of the interrupted attempt's attributes
    log = pd.read_csv(tmp_path / "interrupted" / "trial_0000" / "logs" / "phase1.csv")
    assert list(log["epoch"]) == [0, 1]  # epoch 0 ran once: the retry resumed the interrupted run


@pytest.mark.xdist_group("tune_in_process")
def test_a_retry_whose_resume_state_is_torn_completes_its_trial(tiny_data_dir, tmp_path, monkeypatch):
    """The trainer falls back to the previous resume state, or sets an unreadable one aside and restarts the
    phase (trainer/training/callbacks.py), so the retry completes in its first attempt's run directory."""
    base, settings = tune.parse(tune_args(tiny_data_dir, tmp_path, "torn", "--n_trials=1"))
    interrupt_first_trial(base, settings, monkeypatch)
    for backup in (tmp_path / "torn" / "trial_0000" / "backup").rglob("*.weights.h5*"):
        backup.write_bytes(backup.read_bytes()[:96])  # as a kill in the middle of Keras writing it leaves it

    tune.run(base, settings)
    trials = journal_study(tmp_path / "torn").trials
    assert [trial.state for trial in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert "resume_failed" not in trials[1].user_attrs
    assert list((tmp_path / "torn" / "trial_0000" / "backup").glob("*.unreadable-*"))
    assert (tmp_path / "torn" / "trial_0000" / "metrics.json").exists()