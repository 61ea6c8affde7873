"""Dead workers, retries and the budget without training; a torn journal; a rerun with other flags."""

import dataclasses
import os
import subprocess
import time

import optuna
import pytest
from optuna.trial import TrialState

from trainer import tune
from trainer.tuning import storage
from trainer.tuning import study as study_lib
from trainer.tuning.settings import TuneError

LEARNING_RATE = {"phase1_learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}


def _journal_study(tmp_path, name: str) -> tuple[optuna.Study, storage.Storage]:
    opened = storage.open_storage("", tmp_path, heartbeat=5, max_retries=1)
    return optuna.create_study(study_name=name, storage=opened.optuna_storage, direction="maximize"), opened


def _running_trial(study: optuna.Study, worker: dict) -> optuna.trial.FrozenTrial:
    trial = study.ask(LEARNING_RATE)
    trial.set_user_attr("worker", worker)
    return storage.frozen_trial(study, trial.number)


def test_trials_of_dead_or_silent_workers_are_failed_and_retried(tmp_path):
    study, opened = _journal_study(tmp_path, "stale")
    heartbeats = opened.heartbeat_dir
    dead = subprocess.Popen(["true"])
    dead.wait()
    here_dead = _running_trial(study, {"host": storage.HOST, "pid": dead.pid, "started": "1", "worker": 0})
    here_alive = _running_trial(study, storage.worker_tag(0))
    away_silent = _running_trial(study, {"host": "elsewhere", "pid": 1, "started": "1", "worker": 0})
    away_beating = _running_trial(study, {"host": "elsewhere", "pid": 2, "started": "1", "worker": 1})
    heartbeats.mkdir()
    for trial, age in ((away_silent, 60), (away_beating, 1)):
        (heartbeats / str(trial.number)).touch()
        os.utime(heartbeats / str(trial.number), (time.time() - age,) * 2)

    lines = storage.fail_stale_trials(study, opened)  # grace: 2 heartbeats, 10 s
    states = {trial.number: trial.state for trial in study.trials}
    assert [states[t.number] for t in (here_dead, here_alive, away_silent, away_beating)] == [
        TrialState.FAIL, TrialState.RUNNING, TrialState.FAIL, TrialState.RUNNING]
    assert "has exited" in storage.trial_error(study, study.trials[here_dead.number])
    assert "no heartbeat from elsewhere" in storage.trial_error(study, study.trials[away_silent.number])
    retries = study.get_trials(states=(TrialState.WAITING,))
    assert sorted(trial.system_attrs["failed_trial"] for trial in retries) == [here_dead.number, away_silent.number]
    assert all(not trial.user_attrs for trial in retries)  # not the dead attempt's `worker`, by which it would die
    assert len(lines) == 2 and all("queued again" in line for line in lines)
    # A retry that dies too is not retried beyond --max_retries=1.
    popped = study.ask()
    assert popped.number in {trial.number for trial in retries}
    popped.set_user_attr("worker", {"host": storage.HOST, "pid": dead.pid, "started": "1", "worker": 0})
    assert "not retried" in storage.fail_stale_trials(study, opened)[0]


def test_a_trial_finished_meanwhile_is_not_failed_again(tmp_path):
    study, _ = _journal_study(tmp_path, "raced")
    trial = study.ask(LEARNING_RATE)
    study.tell(trial, 0.5)
    assert storage.fail_trial(study, trial.number) is None
    assert study.trials[trial.number].state == TrialState.COMPLETE


def test_the_budget_counts_a_retried_trial_once_and_refuses_surplus_trials(tmp_path):
    study, _ = _journal_study(tmp_path, "budget")
    distribution = {"x": optuna.distributions.FloatDistribution(0, 1)}
    study.add_trial(optuna.create_trial(value=0.5, params={"x": 0.1}, distributions=distribution))
    failed = _running_trial(study, {"host": "elsewhere", "pid": 1, "started": "1", "worker": 0})
    assert storage.next_step(study, 2) == "wait"  # the budget is used, but trial 1 may come back
    storage.fail_trial(study, failed.number)
    assert storage.next_step(study, 2) == "done"  # not retried: it counts
    assert storage.requeue(study, study.trials[1], max_retries=1)
    assert storage.next_step(study, 2) == "run"  # its retry takes its place
    retry = study.ask()
    assert storage.retry_history(storage.frozen_trial(study, retry.number)) == [failed.number]
    assert not storage.over_budget(study, retry.number, 2)
    study.tell(retry, 0.7)
    assert storage.next_step(study, 2) == "done"
    surplus = study.ask()  # a worker that lost the race for the last place
    assert storage.over_budget(study, surplus.number, 2)


def test_a_half_written_journal_record_is_dropped(tmp_path):
    distributions = {"x": optuna.distributions.FloatDistribution(0, 1)}
    opened = storage.open_storage("", tmp_path, heartbeat=5, max_retries=1)
    optuna.create_study(study_name="torn", storage=opened.optuna_storage).add_trial(
        optuna.create_trial(value=1.0, params={"x": 0.5}, distributions=distributions))
    journal = tmp_path / "journal.log"
    whole = journal.read_bytes()
    journal.write_bytes(whole + b'{"op_code": 5, "worker_id": "killed mid-wri')
    opened = storage.open_storage("", tmp_path, heartbeat=5, max_retries=1)
    assert journal.read_bytes() == whole
    study = optuna.load_study(study_name="torn", storage=opened.optuna_storage)
    study.add_trial(optuna.create_trial(value=2.0, params={"x": 0.1}, distributions=distributions))
    assert [trial.value for trial in study.trials] == [1.0, 2.0]


@pytest.mark.parametrize("change, message", [
    ({"pool_dropout": 0.1}, "(now --pool_dropout=0.1)"),
    ({"search_space": "full"}, "(now --search_space=full"),
], ids=["base_flag", "search_space"])
def test_a_rerun_with_other_flags_is_refused_in_one_line(change, message, tmp_path):
    base, settings = tune.parse(["--flagfile=configs/tune_demo.flags", f"--tune_dir={tmp_path}"])
    study_lib.open_study(base, settings)
    base_fields = {key: value for key, value in change.items() if key != "search_space"}
    other = dataclasses.replace(settings, search_space=change.get("search_space", settings.search_space))
    with pytest.raises(TuneError) as error:
        study_lib.open_study(dataclasses.replace(base, **base_fields), other)
    assert message in str(error.value) and "was started with other flags" in str(error.value)
    assert "\n" not in str(error.value)
    study_lib.open_study(dataclasses.replace(base, data_dir="/elsewhere", train_cache_gib=1.0), settings)  # same


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the test asks as a worker does
def test_a_database_trial_whose_heartbeat_stops_is_failed_and_retried(tmp_path):
    opened = storage.open_storage(f"sqlite:///{tmp_path / 'study.db'}", tmp_path, heartbeat=1, max_retries=1)
    study = optuna.create_study(study_name="silent", storage=opened.optuna_storage, direction="maximize")
    trial = _running_trial(study, {"host": "elsewhere", "pid": 1, "started": "1", "worker": 0})
    with storage.heartbeat(opened, study, trial.number, interval=1):  # optuna's heartbeat, recorded here
        time.sleep(1.5)
        assert storage.fail_stale_trials(study, opened) == []
    time.sleep(3.5)  # past the grace period of 2 heartbeats
    [line] = storage.fail_stale_trials(study, opened)
    assert f"trial {trial.number} was left RUNNING (no heartbeat for over 2 s): failed, queued again" == line
    assert study.trials[trial.number].state == TrialState.FAIL
    assert storage.trial_error(study, study.trials[trial.number]).startswith("worker died: no heartbeat")
    [retry] = study.get_trials(states=(TrialState.WAITING,))
    assert storage.retry_history(retry) == [trial.number] and retry.params == trial.params
