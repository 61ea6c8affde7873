"""What the tuner's tests share: the tiny study's flags, the command in a child process, reading a journal
study back, and the budget's assertions.

Trials are tune_demo.flags shrunk (baseline CNN at 32 px, head only on cached embeddings): seconds each."""

import os
import pathlib
import subprocess
import sys

import optuna
from optuna.trial import TrialState

REPO = pathlib.Path(__file__).parents[2]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
# tune_demo.flags shrunk: the baseline CNN's head at 32 px on cached embeddings, 2 epochs of 4 steps.
TINY = ("--flagfile=configs/tune_demo.flags", "--image_size=32", "--batch_size=8", "--steps_per_epoch=4",
        "--phase1_epochs=2", "--early_stopping_patience=2", "--heartbeat=5")
# Head parameters that learn the tiny families within an epoch or two, and a rate at which nothing is learned:
# the untrained head predicts one of 202 families, mostly absent from the 4-family validation split (F1 0).
GOOD = {"phase1_learning_rate": 0.1, "pool_dropout": 0.0, "dense_units": 0, "weight_decay": 1e-6,
        "label_smoothing": 0.0, "warmup_epochs": 0.0, "class_weights": "none"}
BAD = {**GOOD, "phase1_learning_rate": 1e-4}


def tune_args(data_dir, tune_dir, study, *extra) -> list[str]:
    return [*TINY, f"--data_dir={data_dir}", f"--tune_dir={tune_dir}", f"--study_name={study}", *extra]


def tune_cli(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer.tune", *args], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def journal_study(study_dir: pathlib.Path) -> optuna.Study:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(study_dir / "journal.log")))
    return optuna.load_study(study_name=study_dir.name, storage=storage)


def assert_exactly_n_trials(study: optuna.Study, n_trials: int) -> list[optuna.trial.FrozenTrial]:
    """Unique numbers, nothing left RUNNING or WAITING, n_trials COMPLETE or PRUNED; any other trial is a
    surplus one (started in a race for the last place and never run) or one retried by a later trial.
    Returns the finished trials."""
    trials = study.get_trials()
    assert len({trial.number for trial in trials}) == len(trials)
    assert not [trial.number for trial in trials if trial.state in (TrialState.RUNNING, TrialState.WAITING)]
    finished = [trial for trial in trials if trial.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == n_trials
    retried = {trial.system_attrs.get("failed_trial") for trial in trials}
    assert all(trial.user_attrs.get("surplus") or trial.number in retried for trial in trials if trial not in finished)
    return finished


def assert_multi_worker_study(study: optuna.Study, n_trials: int, both_workers: bool = True) -> None:
    finished = assert_exactly_n_trials(study, n_trials)
    workers = [trial.user_attrs["worker"] for trial in finished]
    assert {worker["worker"] for worker in workers} <= {0, 1}
    assert len({worker["pid"] for worker in workers}) == len({worker["worker"] for worker in workers})
    if both_workers:
        assert {worker["worker"] for worker in workers} == {0, 1}  # both worker processes ran trials
    complete = [trial.value for trial in finished if trial.state == TrialState.COMPLETE]
    assert complete and study.best_value == max(complete)

