"""trainer.tune on the tiny dataset: real worker processes sharing one study, pruning, failing trials, a study
killed with SIGKILL and resumed, a real PostgreSQL server, and the best trial retrained by trainer.main.

Trials are tune_demo.flags shrunk (baseline CNN at 32 px, head only on cached embeddings): seconds each."""

import dataclasses
import fcntl
import glob
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
import uuid
import warnings

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from trainer import flags, train, tune, tune_space, tune_storage
from trainer.config import Config, ConfigError

REPO = pathlib.Path(__file__).parent.parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
# tune_demo.flags shrunk: the baseline CNN's head at 32 px on cached embeddings, 2 epochs of 4 steps.
TINY = ("--flagfile=configs/tune_demo.flags", "--image_size=32", "--batch_size=8", "--steps_per_epoch=4",
        "--phase1_epochs=2", "--early_stopping_patience=2", "--heartbeat=5")
# Head parameters that learn the tiny families within an epoch or two, and a rate at which nothing is learned:
# the untrained head predicts one of 202 families, mostly absent from the 4-family validation split (F1 0).
GOOD = {"phase1_learning_rate": 0.1, "pool_dropout": 0.0, "dense_units": 0, "weight_decay": 1e-6,
        "label_smoothing": 0.0, "warmup_epochs": 0.0, "class_weights": "none"}
BAD = {**GOOD, "phase1_learning_rate": 1e-4}
POSTGRES_PORT = 55432


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


# --- Two CPU worker processes on one journal-file study; then the winner retrained by trainer.main. ---------

@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory) -> pathlib.Path:
    """A directory every xdist worker of this session sees (this session's own temp dir without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def once(shared_dir: pathlib.Path, name: str, make) -> dict:
    """make(directory) -> a JSON-able result, computed by the first xdist worker that asks and read by the others
    (`--dist loadgroup` keeps a group on one worker only with pytest < 9.2: pytest-dev/pytest-xdist#1386)."""
    result = shared_dir / f"{name}.json"
    with open(shared_dir / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not result.exists():
            result.write_text(json.dumps(make(shared_dir / name)))
    return json.loads(result.read_text())


@pytest.fixture(scope="module")
def two_workers(tiny_data_dir, shared_dir):
    def make(tune_dir: pathlib.Path) -> dict:
        done = tune_cli(*tune_args(tiny_data_dir, tune_dir, "two", "--workers=2", "--n_trials=4"))
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return {"stdout": done.stdout, "study_dir": str(tune_dir / "two")}

    result = once(shared_dir, "tune_two_workers", make)
    return result["stdout"], pathlib.Path(result["study_dir"])


@pytest.mark.slow
@pytest.mark.xdist_group("tune_two_workers")
def test_two_worker_processes_share_one_study(two_workers):
    stdout, study_dir = two_workers
    study = journal_study(study_dir)
    assert_multi_worker_study(study, 4)
    assert "4/4 trials done" in stdout
    for trial in study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)):
        run_dir = study_dir / f"trial_{trial.number:04d}"
        config = flags.parse([f"--flagfile={run_dir / 'flags.txt'}"])
        assert config.model_dir == str(run_dir) == trial.user_attrs["model_dir"]
        assert {name: getattr(config, name) for name in trial.params} == trial.params
        assert config.phase2_epochs == 0 and config.phase1_cached_features  # head only: backbone frozen
        assert config.train_cache_gib == Config.train_cache_gib / 2  # the machine's budget, split
        assert not (run_dir / "features").exists()
    assert list((study_dir / "features").glob("*.npz"))  # one embedding cache for every trial


@pytest.mark.slow
@pytest.mark.xdist_group("tune_two_workers")
def test_study_outputs(two_workers):
    stdout, study_dir = two_workers
    study = journal_study(study_dir)
    table = pd.read_csv(study_dir / "trials.csv")
    assert sorted(table["number"]) == sorted(trial.number for trial in study.trials)
    assert (study_dir / "history.png").stat().st_size > 0
    complete = len(study.get_trials(states=(TrialState.COMPLETE,)))
    if complete >= 2:
        assert (study_dir / "importances.png").stat().st_size > 0
    else:
        assert "importances: not drawn" in stdout
    best = study.best_trial
    assert f"Best trial {best.number} of study two" in (study_dir / "best.flags").read_text()
    assert f"best {best.value:.4f} (trial {best.number})" in stdout  # the printed summary


@pytest.mark.slow
@pytest.mark.xdist_group("tune_two_workers")
def test_best_flags_retrain_with_trainer_main(two_workers):
    _, study_dir = two_workers
    best = journal_study(study_dir).best_trial
    config = flags.parse([f"--flagfile={study_dir / 'best.flags'}"])
    trial_flags = flags.parse([f"--flagfile={study_dir / f'trial_{best.number:04d}' / 'flags.txt'}"])
    # The retrain is one process: it gets the machine's whole cache budget, which two workers split.
    assert config == dataclasses.replace(trial_flags, model_dir=str(study_dir / f"best_run_{best.number:04d}"),
                                         train_cache_gib=Config.train_cache_gib)
    done = subprocess.run([sys.executable, "-m", "trainer.main", f"--flagfile={study_dir / 'best.flags'}"],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = pd.read_json(pathlib.Path(config.model_dir) / "metrics.json", typ="series")
    assert 0.0 <= metrics["best_val_macro_f1"] <= 1.0


# --- Pruning and a failing trial, in this process. -----------------------------------------------------------

@pytest.fixture(scope="module")
def pruned_and_failed(tiny_data_dir, shared_dir):
    """Trials 0 and 1 learn, trial 2 raises, trial 3 cannot learn (the median pruner has 2 finished trials)."""

    def make(tune_dir: pathlib.Path) -> dict:
        base, settings = tune.parse(tune_args(tiny_data_dir, tune_dir, "prune", "--n_trials=4", "--steps_per_epoch=8",
                                              "--phase1_epochs=4", "--early_stopping_patience=4", "--pruner=median",
                                              "--pruner_startup_trials=2", "--pruner_warmup_epochs=0"))
        handle = tune.open_study(tune.prepare_base(base, settings), settings)
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


def interrupt_first_trial(base: Config, settings: tune.Settings, monkeypatch) -> list[optuna.trial.FrozenTrial]:
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
    log = pd.read_csv(tmp_path / "interrupted" / "trial_0000" / "logs" / "phase1.csv")
    assert list(log["epoch"]) == [0, 1]  # epoch 0 ran once: the retry resumed the interrupted run


@pytest.mark.xdist_group("tune_in_process")
def test_a_retry_that_cannot_resume_starts_its_trial_over(tiny_data_dir, tmp_path, monkeypatch):
    base, settings = tune.parse(tune_args(tiny_data_dir, tmp_path, "torn", "--n_trials=1"))
    interrupt_first_trial(base, settings, monkeypatch)
    [backup] = (tmp_path / "torn" / "trial_0000" / "backup").rglob("*.weights.h5")
    backup.write_bytes(backup.read_bytes()[:96])  # as a kill in the middle of Keras writing it leaves it

    tune.run(base, settings)
    trials = journal_study(tmp_path / "torn").trials
    assert [trial.state for trial in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert "OSError" in trials[1].user_attrs["resume_failed"]
    assert (tmp_path / "torn" / "trial_0000.unresumable_0001" / "backup").exists()
    log = pd.read_csv(tmp_path / "torn" / "trial_0000" / "logs" / "phase1.csv")
    assert list(log["epoch"]) == [0, 1]  # started over in a clean run directory


# --- SIGKILL mid-study, then the same command again. ---------------------------------------------------------

@pytest.mark.slow
def test_killed_study_resumes_without_losing_a_trial(tiny_data_dir, tmp_path):
    args = tune_args(tiny_data_dir, tmp_path, "killed", "--n_trials=2", "--phase1_epochs=6", "--pruner=none")
    first = subprocess.Popen([sys.executable, "-m", "trainer.tune", *args], cwd=REPO, env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal, deadline = tmp_path / "killed" / "journal.log", time.monotonic() + 300
    try:
        while time.monotonic() < deadline and first.poll() is None:
            if journal.exists():  # kill once a trial is complete and the next one is training
                trials = journal_study(journal.parent).trials
                if (any(trial.state == TrialState.COMPLETE for trial in trials) and
                        any(trial.state == TrialState.RUNNING and trial.intermediate_values for trial in trials)):
                    break
            time.sleep(0.2)
    finally:
        first.kill()
        first.wait()
    before = journal_study(journal.parent).trials
    complete = {trial.number: (trial.value, trial.params) for trial in before if trial.state == TrialState.COMPLETE}
    running = [trial.number for trial in before if trial.state == TrialState.RUNNING]
    assert complete and running, [trial.state for trial in before]

    second = tune_cli(*args)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert f"trial {running[0]} was left RUNNING" in second.stdout
    study = journal_study(journal.parent)
    trials = study.trials
    for number, (value, params) in complete.items():  # nothing finished was lost or rerun
        assert (trials[number].state, trials[number].value, trials[number].params) == (TrialState.COMPLETE, value,
                                                                                         params)
    killed = trials[running[0]]
    assert killed.state == TrialState.FAIL and killed.user_attrs["error"].startswith("worker died:")
    [retry] = [trial for trial in trials if trial.system_attrs.get("failed_trial") == killed.number]
    assert retry.params == killed.params and retry.state == TrialState.COMPLETE, retry.user_attrs.get("error")
    assert retry.user_attrs["model_dir"] == str(tmp_path / "killed" / f"trial_{killed.number:04d}")  # resumed there
    assert len(assert_exactly_n_trials(study, 2)) == 2 and len(trials) == 3


# --- A real PostgreSQL server. -------------------------------------------------------------------------------

def _stop_postgres(url: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    with engine.connect() as connection:
        data_dir = connection.execute(sqlalchemy.text("SHOW data_directory")).scalar()
    engine.dispose()
    [bindir] = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1:]
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*as_postgres, f"{bindir}/pg_ctl", "-D", data_dir, "stop", "-m", "fast"], capture_output=True)
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url():
    """RARE_SPECIES_POSTGRES_URL (set by .ci/run), else a server already on 127.0.0.1:55432, else one started
    with .ci/postgres for this session (and stopped after). Skips loudly when none can start."""
    url = os.environ.get("RARE_SPECIES_POSTGRES_URL")
    if url:
        yield url
        return
    default = f"postgresql+psycopg2://postgres@127.0.0.1:{POSTGRES_PORT}/optuna_test"
    if shutil.which("pg_isready") and subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p",
                                                      str(POSTGRES_PORT)]).returncode == 0:
        yield default
        return
    started = subprocess.run(["bash", ".ci/postgres", str(POSTGRES_PORT)], cwd=REPO, capture_output=True, text=True,
                             timeout=600)
    if started.returncode:
        message = (f"!!! PostgreSQL could not be started by .ci/postgres ({started.stderr.strip()[-300:]}): the "
                   "PostgreSQL tuner tests are SKIPPED; install it (apt-get install postgresql) or set "
                   "RARE_SPECIES_POSTGRES_URL !!!")
        print(message, file=sys.stderr)
        warnings.warn(message)
        pytest.skip(message)
    url = started.stdout.strip().splitlines()[-1]
    yield url
    _stop_postgres(url)


@pytest.mark.slow
@pytest.mark.xdist_group("tune_postgres")
def test_two_workers_share_a_study_on_postgresql(postgres_url, tiny_data_dir, tmp_path):
    name = f"tune_test_{uuid.uuid4().hex[:12]}"
    plain_url = postgres_url.replace("postgresql+psycopg2://", "postgresql://")  # as the README writes it
    done = tune_cli(*tune_args(tiny_data_dir, tmp_path, name, f"--storage={plain_url}", "--workers=2",
                               "--n_trials=3"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    try:
        study = optuna.load_study(study_name=name, storage=postgres_url)
        assert_multi_worker_study(study, 3, both_workers=False)  # 3 trials: one worker may start late
        assert (tmp_path / name / "best.flags").exists() and not (tmp_path / name / "journal.log").exists()
        assert "dashboard: optuna-dashboard postgresql" in done.stdout
    finally:
        optuna.delete_study(study_name=name, storage=postgres_url)


# --- Dead workers and the budget, without training. ----------------------------------------------------------

def _running_trial(study: optuna.Study, worker: dict) -> optuna.trial.FrozenTrial:
    trial = study.ask({"phase1_learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
    trial.set_user_attr("worker", worker)
    return study._storage.get_trial(trial._trial_id)


def test_trials_of_dead_or_silent_workers_are_failed_and_retried(tmp_path):
    storage, heartbeats = tune_storage.open_storage("", tmp_path, heartbeat=5, max_retries=1)
    study = optuna.create_study(study_name="stale", storage=storage, direction="maximize")
    dead = subprocess.Popen(["true"])
    dead.wait()
    here_dead = _running_trial(study, {"host": tune_storage.HOST, "pid": dead.pid, "started": "1", "worker": 0})
    here_alive = _running_trial(study, tune_storage.worker_tag(0))
    away_silent = _running_trial(study, {"host": "elsewhere", "pid": 1, "started": "1", "worker": 0})
    away_beating = _running_trial(study, {"host": "elsewhere", "pid": 2, "started": "1", "worker": 1})
    heartbeats.mkdir()
    for trial, age in ((away_silent, 60), (away_beating, 1)):
        (heartbeats / str(trial.number)).touch()
        os.utime(heartbeats / str(trial.number), (time.time() - age,) * 2)

    lines = tune_storage.fail_stale_trials(study, heartbeats, grace=10, max_retries=1)
    states = {trial.number: trial.state for trial in study.trials}
    assert [states[t.number] for t in (here_dead, here_alive, away_silent, away_beating)] == [
        TrialState.FAIL, TrialState.RUNNING, TrialState.FAIL, TrialState.RUNNING]
    assert "has exited" in study.trials[here_dead.number].user_attrs["error"]
    assert "no heartbeat from elsewhere" in study.trials[away_silent.number].user_attrs["error"]
    retries = study.get_trials(states=(TrialState.WAITING,))
    assert sorted(trial.system_attrs["failed_trial"] for trial in retries) == [here_dead.number, away_silent.number]
    assert len(lines) == 2 and all("queued again" in line for line in lines)
    # A retry that dies too is not retried beyond --max_retries=1.
    popped = study.ask()
    assert popped.number in {trial.number for trial in retries}
    popped.set_user_attr("worker", {"host": tune_storage.HOST, "pid": dead.pid, "started": "1", "worker": 0})
    assert "not retried" in tune_storage.fail_stale_trials(study, heartbeats, grace=10, max_retries=1)[0]


def test_the_budget_counts_a_retried_trial_once_and_refuses_surplus_trials(tmp_path):
    storage, _ = tune_storage.open_storage("", tmp_path, heartbeat=5, max_retries=1)
    study = optuna.create_study(study_name="budget", storage=storage, direction="maximize")
    distribution = {"x": optuna.distributions.FloatDistribution(0, 1)}
    study.add_trial(optuna.create_trial(value=0.5, params={"x": 0.1}, distributions=distribution))
    failed = _running_trial(study, {"host": "elsewhere", "pid": 1, "started": "1", "worker": 0})
    assert tune_storage.next_step(study, 2) == "wait"  # the budget is used, but trial 1 may come back
    tune_storage.fail_trial(study, failed, "worker died: test")
    assert tune_storage.next_step(study, 2) == "done"  # not retried: it counts
    tune_storage.retry(study, study.trials[1], max_retries=1)
    assert tune_storage.next_step(study, 2) == "run"  # its retry takes its place
    retry = study.ask()
    assert not tune_storage.over_budget(study, retry.number, 2)
    study.tell(retry, 0.7)
    assert tune_storage.next_step(study, 2) == "done"
    surplus = study.ask()  # a worker that lost the race for the last place
    assert tune_storage.over_budget(study, surplus.number, 2)


# --- The search space and the settings. ----------------------------------------------------------------------

def _sampled_configs(base: Config, space: str, n: int = 40) -> list[tuple[dict, Config]]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
    configs = []
    for _ in range(n):
        params = tune_space.suggest(study.ask(), tune_space.SPACES[space], base)
        configs.append((params, tune_space.trial_config(base, tune_space.SPACES[space], params, "/tmp/x")))
    return configs


def test_head_space_keeps_the_backbone_frozen_and_samples_conditional_parameters():
    base = Config(model_dir="unused", backbone="baseline_cnn", weights="none", augment="none", optimizer="adam",
                  phase1_cached_features=True)
    configs = _sampled_configs(base, "head")
    for params, config in configs:
        assert config.phase2_epochs == 0 and config.oversample_epochs == 0
        assert "weight_decay" not in params  # only AdamW uses it
        assert ("dense_dropout" in params) == ("l2" in params) == (config.dense_units > 0)
        assert ("class_weight_beta" in params) == (config.class_weights == "effective_number")
    assert len({params["phase1_learning_rate"] for params, _ in configs}) == len(configs)
    assert len({config.class_weights for _, config in configs}) == 4
    assert all("weight_decay" in params
               for params, _ in _sampled_configs(dataclasses.replace(base, optimizer="adamw"), "head", 5))


def test_full_space_tunes_fine_tuning_augmentation_and_sampling():
    base = Config(model_dir="unused", backbone="baseline_cnn", weights="none", augment="recipe", phase2_epochs=3)
    for params, config in _sampled_configs(base, "full", 10):
        assert {"phase2_learning_rate", "unfreeze_layers", "augment_strength", "sampling_temperature"} <= set(params)
        assert config.phase2_epochs == 3
    cached = dataclasses.replace(base, augment="none", phase1_cached_features=True)
    assert all("sampling_temperature" not in params and "augment_strength" not in params
               for params, _ in _sampled_configs(cached, "full", 10))


def test_gpu_workers_are_pinned_one_group_each():
    assert [env["CUDA_VISIBLE_DEVICES"] for env in tune.worker_envs(tune.Settings(gpus="0,1,3"))] == ["0", "1", "3"]
    assert [env["CUDA_VISIBLE_DEVICES"] for env in tune.worker_envs(tune.Settings(gpus="0+1,2+3"))] == ["0,1", "2,3"]
    assert [env["CUDA_VISIBLE_DEVICES"] for env in tune.worker_envs(tune.Settings(workers=2))] == ["", ""]


@pytest.mark.parametrize("args, message", [
    (["--gpus=0,1", "--workers=2"], "--gpus=0,1 and --workers=2: give one of them"),
    (["--n_trials=0"], "--n_trials=0: a study needs at least 1 trial"),
    (["--gpus=first"], "--gpus=first: give GPU indices separated by commas"),
    (["--study_name="], "--study_name is empty: name the study"),
    (["--phase1_epochs=0"], "--search_space=head trains phase 1 only but --phase1_epochs=0"),
    (["--search_space=full", "--augment=recipe"], "--search_space=full: --phase1_cached_features caches"),
    (["--storage=postgresql://nobody:secret@127.0.0.1:1/none"],
     "--storage=postgresql://nobody:***@127.0.0.1:1/none: cannot open the database"),
], ids=["gpus_and_workers", "no_trials", "bad_gpus", "no_name", "head_without_phase1", "space_contradiction",
        "unreachable_storage"])
def test_bad_settings_are_one_line_errors(args, message, tiny_data_dir, tmp_path):
    base, settings = tune.parse([*tune_args(tiny_data_dir, tmp_path, "bad"), *args])
    with pytest.raises((tune.TuneError, ConfigError, tune_storage.StorageError)) as error:
        tune.run(base, settings)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not list(tmp_path.glob("*/trial_*"))


@pytest.mark.parametrize("args, message", [
    (["--search_space=everything"], "flag --search_space=everything: value should be one of <head|full>"),
    (["--gpus=0", "--workers=2"], "--gpus=0 and --workers=2: give one of them"),
], ids=["flag_parser", "tuner"])
def test_the_command_line_fails_in_one_line_with_status_2(args, message, tmp_path):
    done = tune_cli(*tune_args(tmp_path / "no_data", tmp_path, "bad"), *args, timeout=120)
    errors = [line for line in done.stderr.splitlines() if line.startswith("trainer.tune: error:")]
    assert done.returncode == 2, done.stderr
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in done.stderr


def test_helpfull_documents_every_trainer_and_tuner_flag():
    done = tune_cli("--helpfull", timeout=120)
    for field in (*dataclasses.fields(Config), *dataclasses.fields(tune.Settings)):
        assert f"--{field.name}:" in done.stdout or f"--[no]{field.name}:" in done.stdout, field.name
    assert "tune_worker" not in done.stdout


@pytest.mark.parametrize("args", [
    ["--flagfile=configs/tune_demo.flags"],
    ["--flagfile=configs/tune_inceptionv3.flags", "--study_name=incv3"],
    ["--flagfile=configs/tune_inceptionv3.flags", "--study_name=incv3", "--search_space=head",
     "--phase1_cached_features", "--augment=none", "--phase1_epochs=20"],  # its comment's head-only variant
], ids=["demo", "inceptionv3", "inceptionv3_head"])
def test_tune_flagfiles_set_a_valid_study(args):
    base, settings = tune.parse(args)
    tune.check_settings(settings)
    tune_space.check(dataclasses.replace(base, model_dir="unused"), settings.search_space)
    if settings.search_space == "head":
        assert base.phase1_cached_features and base.augment == "none"


def test_a_half_written_journal_record_is_dropped(tmp_path):
    distributions = {"x": optuna.distributions.FloatDistribution(0, 1)}
    storage, _ = tune_storage.open_storage("", tmp_path, heartbeat=5, max_retries=1)
    optuna.create_study(study_name="torn", storage=storage).add_trial(
        optuna.create_trial(value=1.0, params={"x": 0.5}, distributions=distributions))
    journal = tmp_path / "journal.log"
    whole = journal.read_bytes()
    journal.write_bytes(whole + b'{"op_code": 5, "worker_id": "killed mid-wri')
    storage, _ = tune_storage.open_storage("", tmp_path, heartbeat=5, max_retries=1)
    assert journal.read_bytes() == whole
    study = optuna.load_study(study_name="torn", storage=storage)
    study.add_trial(optuna.create_trial(value=2.0, params={"x": 0.1}, distributions=distributions))
    assert [trial.value for trial in study.trials] == [1.0, 2.0]
