"""trainer.tune as a command: two worker processes sharing one study, a console line per trial, its outputs,
the best trial retrained by trainer.main (the study's one reading of test), and a study killed with SIGKILL and
resumed by the same command."""

import dataclasses
import json
import pathlib
import re
import subprocess
import sys
import time

import pandas as pd
import pytest
from optuna.trial import TrialState

from tests.conftest import once
from tests.tuning.common import (
    ENV,
    REPO,
    assert_exactly_n_trials,
    assert_multi_worker_study,
    journal_study,
    tune_args,
    tune_cli,
)
from trainer.training import config as config_lib
from trainer.training.config import Config
from trainer.tuning import storage
from trainer.tuning.worker import trial_epochs, trial_log


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
        config = config_lib.parse([f"--flagfile={run_dir / 'flags.txt'}"])
        assert config.model_dir == str(run_dir) == trial.user_attrs["model_dir"]
        assert {name: getattr(config, name) for name in trial.params} == trial.params
        assert config.phase2_epochs == 0 and config.phase1_cached_features  # head only: backbone frozen
        assert config.train_cache_gib == Config.train_cache_gib / 2  # the machine's budget, split
        assert not (run_dir / "features").exists()
    assert list((study_dir / "features").glob("*.npz"))  # one embedding cache for every trial


@pytest.mark.slow
@pytest.mark.xdist_group("tune_two_workers")
def test_the_command_prints_one_line_per_trial_of_either_worker(two_workers):
    stdout, study_dir = two_workers
    study = journal_study(study_dir)
    shown = [line for line in stdout.splitlines() if line.startswith("tune: trial ")]
    run = [trial for trial in study.trials if not trial.user_attrs.get("surplus")]
    assert len(shown) == len(run)
    for trial in run:
        [line] = [line for line in shown if line.startswith(f"tune: trial {trial.number} ")]
        assert re.search(rf"; {trial_epochs(trial)} epochs, \d+\.\d min; ", line), line
        assert all(f"{name}=" in line for name in trial.params)
        if trial.state == TrialState.COMPLETE:
            assert f"complete: validation macro-F1 {trial.value:.4f}" in line
        assert "(run epoch 1)" in trial_log(study_dir / f"trial_{trial.number:04d}").read_text()
    assert "(run epoch 1)" not in stdout
    assert not re.search(r"test_?F1|final test +\d", stdout, re.IGNORECASE)


@pytest.mark.slow
@pytest.mark.xdist_group("tune_two_workers")
def test_study_outputs(two_workers):
    stdout, study_dir = two_workers
    study = journal_study(study_dir)
    table = pd.read_csv(study_dir / "trials.csv")
    assert sorted(table["number"]) == sorted(trial.number for trial in study.trials)
    for name in ("history", "intermediate", "timeline"):
        assert (study_dir / f"{name}.png").stat().st_size > 0
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
    config = config_lib.parse([f"--flagfile={study_dir / 'best.flags'}"])
    trial_flags = config_lib.parse([f"--flagfile={study_dir / f'trial_{best.number:04d}' / 'flags.txt'}"])
    # The retrain is one process: it gets the machine's whole cache budget, which two workers split; it draws
    # the TensorBoard images the trials skip.
    assert config == dataclasses.replace(trial_flags, model_dir=str(study_dir / f"best_run_{best.number:04d}"),
                                         test_split=Config.test_split,
                                         train_cache_gib=Config.train_cache_gib, tensorboard_images=True)
    assert not trial_flags.tensorboard_images
    done = subprocess.run([sys.executable, "-m", "trainer.main", f"--flagfile={study_dir / 'best.flags'}"],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((pathlib.Path(config.model_dir) / "metrics.json").read_text())
    assert 0.0 <= metrics["best_val_macro_f1"] <= 1.0
    assert trial_flags.test_split == "" and config.test_split == "test"  # the trials never read it; the retrain does
    assert metrics["final_test_split"] == "test" and 0.0 <= metrics["test"]["macro_f1"] <= 1.0
    [row] = [line for line in done.stdout.splitlines() if line.startswith("final test")]
    assert f"{metrics['test']['macro_f1']:.4f}" in row


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
    assert killed.state == TrialState.FAIL and storage.trial_error(study, killed).startswith("worker died:")
    [retry] = [trial for trial in trials if storage.retry_history(trial)[:1] == [killed.number]]
    assert retry.params == killed.params and retry.state == TrialState.COMPLETE, retry.user_attrs.get("error")
    assert retry.user_attrs["model_dir"] == str(tmp_path / "killed" / f"trial_{killed.number:04d}")  # resumed there
    assert len(assert_exactly_n_trials(study, 2)) == 2 and len(trials) == 3
    assert "worker died:" in pd.read_csv(tmp_path / "killed" / "trials.csv")["user_attrs_error"][killed.number]
