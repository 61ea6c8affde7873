"""The worker in this process: pruning, a trial that raises, and Ctrl-C / SIGTERM in the middle of a trial
(queued again, then resumed from its run directory, or started over when that run cannot be resumed)."""

import pathlib

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from tests.tuning.common import BAD, GOOD, journal_study, once, tune_args
from trainer import tune
from trainer.training import train
from trainer.training.config import Config
from trainer.tuning import study as study_lib
from trainer.tuning.settings import Settings


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

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(train, "run", flaky_run)
            outputs = tune.run(base, settings)
        return {"outputs": outputs, "study_dir": str(tune_dir / "prune")}

    result = once(shared_dir, "tune_pruned_and_failed", make)
    return journal_study(pathlib.Path(result["study_dir"])), result["outputs"]


@pytest.mark.xdist_group("tune_in_process")
def test_a_trial_that_cannot_learn_is_pruned(pruned_and_failed):
    study, _ = pruned_and_failed
    good = [study.trials[0], study.trials[1]]
    bad = study.trials[3]
    assert [trial.state for trial in good] == [TrialState.COMPLETE] * 2
    assert all(len(trial.intermediate_values) == 4 for trial in good)
    assert all(0.0 <= trial.user_attrs["test_macro_f1"] <= 1.0 for trial in good)
    assert bad.params["phase1_learning_rate"] == BAD["phase1_learning_rate"]
    assert bad.state == TrialState.PRUNED
    step = max(bad.intermediate_values)
    assert step < 4  # stopped before its last epoch
    assert bad.intermediate_values[step] < min(trial.intermediate_values[step] for trial in good)


@pytest.mark.xdist_group("tune_in_process")
def test_a_failing_trial_is_recorded_and_the_study_goes_on(pruned_and_failed):
    study, outputs = pruned_and_failed
    failed, after = study.trials[2], study.trials[3]
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs["error"] == "RuntimeError: injected failure in trial 2"
    assert after.datetime_start >= failed.datetime_complete
    assert len(study.trials) == 4 and outputs["best_trial"] in (0, 1)
    assert pathlib.Path(outputs["best_flags"]).exists()


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