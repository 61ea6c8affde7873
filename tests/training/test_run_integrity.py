"""A run directory is one run's: one writer at a time, nothing adopted that is not this run, nothing continued on
another dataset, and a start that fails writes nothing a corrected command would trip over."""

import dataclasses
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import once, user_env
from tests.training.test_end_to_end import tiny_config
from tests.training.test_resume import REPO, command, logged_epochs
from trainer import cli, tune
from trainer.auditing import run as audit_run
from trainer.auditing.settings import AuditConfig
from trainer.training import inputs, train
from trainer.training.config import Config, ConfigError
from trainer.training.run_dir import FolderLock, RunFiles, RunLockedError


def refusal(run) -> str:
    """The one-line message of the UserError run() raises: what cli.run prints with exit status 2 (the rebuilt
    dataset's and the following tests check that path itself, in processes of their own)."""
    with pytest.raises(cli.UserError) as refused:
        run()
    assert "\n" not in str(refused.value)
    return str(refused.value)


@pytest.mark.slow
def test_two_processes_into_one_model_dir_one_refuses_the_other_finishes_and_a_rerun_completes(tiny_data_dir,
                                                                                                tmp_path):
    """The first is `python -m trainer.main`; the second and the rerun are this test's process, with the same
    arguments."""
    model_dir = tmp_path / "run"
    args = [*command(tiny_data_dir, model_dir), "--phase2_epochs=3"]  # epochs enough to be running when refused
    config = cli.parse(args[3:], Config)
    inputs.dataset_info(config)  # opened before the first starts: the refusal below then takes milliseconds
    first = subprocess.Popen(args, cwd=REPO, env=user_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.monotonic() + 300
        while not logged_epochs(model_dir, "phase1") and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended before the second could start"
        line = refusal(lambda: train.run(config))
        assert f"pid {first.pid} on " in line and "rerunning the same command" in line
        assert first.wait(timeout=600) == 0, first.stderr.read()[-2000:]
    finally:
        first.kill()
    history = (model_dir / "logs" / "phase2.csv").read_text().splitlines()
    assert sum(line.startswith("epoch") for line in history) == 1  # one header: one writer
    assert train.run(config)["label_rank"] == "family"


def test_the_lock_of_a_dead_process_is_taken_over(tmp_path):
    files = RunFiles(tmp_path)
    holder = subprocess.Popen(["python3", "-c", (
        "import fcntl, os, sys, time\n"
        f"f = open({str(files.lock)!r}, 'a+'); fcntl.flock(f, fcntl.LOCK_EX)\n"
        "f.write(f'pid {os.getpid()} on elsewhere'); f.flush(); print('held', flush=True); time.sleep(600)\n")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunLockedError, match=f"being written by pid {holder.pid} on elsewhere"):
        with FolderLock(files.lock):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with FolderLock(files.lock):
        assert files.lock.read_text() == f"pid {os.getpid()} on {os.uname().nodename}"


def test_files_of_a_run_without_flags_txt_are_not_adopted(tiny_data_dir, tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"holds files \(metrics.json\) but no flags.txt") as refused:
        train.run(tiny_config(tiny_data_dir, tmp_path))
    assert "\n" not in str(refused.value)
    assert sorted(path.name for path in tmp_path.iterdir()) == [".lock", "metrics.json"]


@dataclasses.dataclass(frozen=True)
class Finished:
    data_dir: str
    model_dir: str
    refusal: str  # of the start with weights that could not be loaded
    files_after_refusal: list[str]
    label_rank: str  # of the corrected run's results


@pytest.fixture(scope="module")
def finished(tiny_data_dir, shared_dir) -> Finished:
    """A run on a copy of the tiny dataset (which the tests below may rebuild in place), started first with weights
    that cannot be loaded, then with the corrected command, which finishes it: one run for the tests below and
    every xdist worker."""
    def make(root: pathlib.Path) -> dict:
        shutil.copytree(tiny_data_dir, root / "data")
        not_weights = root / "weights.weights.h5"
        not_weights.write_text("not an HDF5 file")
        config = tiny_config(str(root / "data"), root / "run", phase2_epochs=0, steps_per_epoch=2)
        refused = refusal(lambda: train.run(dataclasses.replace(config, weights=str(not_weights))))
        files = RunFiles(root / "run").run_files_present()
        return dataclasses.asdict(Finished(config.data_dir, config.model_dir, refused, files,
                                           train.run(config)["label_rank"]))

    return Finished(**once(shared_dir, "run_integrity_finished", make))


@pytest.mark.xdist_group("run_integrity_finished")
def test_a_failed_start_writes_nothing_and_the_corrected_command_runs(finished):
    assert re.search("--weights=.*could not be loaded.*--weights=none", finished.refusal)
    assert finished.files_after_refusal == []
    assert finished.label_rank == "family"


@pytest.mark.xdist_group("run_integrity_finished")
def test_a_run_records_what_it_was_trained_on(finished):
    record = json.loads(RunFiles(pathlib.Path(finished.model_dir)).trained_on.read_text())
    assert record["dataset"] == "rare_species/small_128/1.1.0" and record["weights"] == "none"
    assert set(record["examples"]) == set(record["split_digests"]) == {"train", "validation", "test"}
    assert all(len(digest) == 64 for digest in record["split_digests"].values())


@pytest.mark.xdist_group("run_integrity_finished")
def test_a_rerun_on_a_rebuilt_dataset_is_refused(finished):
    """Rebuilding the dataset in place with other splits changes the build report's digests (the builder's tests
    check they follow the splits); the finished run is then neither resumed nor rescored."""
    metadata_file = next(pathlib.Path(finished.data_dir).rglob("small_128/1.1.0/metadata.json"))
    metadata = json.loads(metadata_file.read_text())
    metadata["build_report"]["split_digests"]["test"] = "0" * 64
    metadata_file.write_text(json.dumps(metadata))
    files = RunFiles(pathlib.Path(finished.model_dir))
    metrics_before = files.metrics.read_text()
    rerun = subprocess.run([sys.executable, "-m", "trainer.main", f"--flagfile={files.flagfile}"], cwd=REPO,
                           env=user_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 2
    lines = rerun.stderr.strip().splitlines()
    assert len(lines) == 1 and "trained on something else (the test split's files)" in lines[0]
    assert files.metrics.read_text() == metrics_before


def _one_line_error(args: list[str], env: dict | None = None) -> str:
    done = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env or user_env(), capture_output=True,
                          text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize("command", ["main", "tune", "audit"])
def test_a_file_where_a_folder_is_expected_is_one_line(tiny_data_dir, tmp_path, command):
    """Each command's own code, as `python -m trainer.<command>` calls it with these flags."""
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    run = {"main": lambda: train.run(cli.parse([
               f"--model_dir={a_file}/run", "--backbone=baseline_cnn", "--weights=none", f"--data_dir={tiny_data_dir}",
               "--dataset_config=small_128", "--image_size=32"], Config)),
           "tune": lambda: tune.run(*tune.parse([
               f"--flagfile={REPO}/configs/tune_demo.flags", f"--data_dir={tiny_data_dir}", "--study_name=s",
               f"--tune_dir={a_file}", "--n_trials=1"])),
           "audit": lambda: audit_run.run(cli.parse([
               f"--data_dir={tiny_data_dir}", "--config=small_128", "--embedder=color_stats", f"--out={a_file}"],
               AuditConfig))}[command]
    assert f"{a_file} is a file, not a folder" in refusal(run)
    assert a_file.read_text() == "mine"


def test_a_malformed_tf_config_is_one_line(tmp_path):
    line = _one_line_error(["trainer.main", f"--model_dir={tmp_path / 'run'}", "--backbone=baseline_cnn",
                            "--weights=none"], {**user_env(), "TF_CONFIG": '{"cluster": '})
    assert "TF_CONFIG=" in line and "cannot be read" in line and not (tmp_path / "run").exists()


def test_ctrl_c_while_a_command_starts_is_one_line(tmp_path):
    starting = subprocess.Popen([sys.executable, "-m", "trainer.main", f"--model_dir={tmp_path / 'run'}"], cwd=REPO,
                                env=user_env(), stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(1.5)  # importing TensorFlow
    starting.send_signal(signal.SIGINT)
    lines = starting.communicate(timeout=120)[1].strip().splitlines()
    assert starting.returncode == 130 and lines == ["trainer.main: interrupted while starting; nothing was written"]
    assert not (tmp_path / "run").exists()


def test_a_second_tuner_of_the_same_study_on_one_machine_is_one_line(tiny_data_dir, tmp_path):
    study_dir = tmp_path / "tune" / "s"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import pathlib, socket, sys, time\n"
        "from trainer.training.run_dir import FolderLock\n"
        f"with FolderLock(pathlib.Path({str(study_dir)!r}) / f'.lock-{{socket.gethostname()}}'):\n"
        "    print('held', flush=True); time.sleep(600)\n")], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        line = refusal(lambda: tune.run(*tune.parse([
            f"--flagfile={REPO}/configs/tune_demo.flags", f"--data_dir={tiny_data_dir}", "--study_name=s",
            f"--tune_dir={tmp_path / 'tune'}", "--n_trials=1"])))
        assert f"being written by pid {holder.pid}" in line and "--study_name=s" in line
        assert sorted(path.name for path in study_dir.iterdir()) == [f".lock-{os.uname().nodename}"]
    finally:
        holder.kill()


def test_a_full_disk_is_one_line(tmp_path):
    """Any command's writer meeting ENOSPC (here a main raising it, as a full disk makes write() do): cli.run's
    handling, whatever the command's settings (here one flag, which spares the child TensorFlow's import)."""
    script = ("import dataclasses, errno, sys\n"
              "from trainer import cli\n"
              "@dataclasses.dataclass(frozen=True)\n"
              "class Settings:\n"
              "    model_dir: str = cli.field('runs/x', 'Where the run goes.', group='outputs')\n"
              "def main(settings):\n"
              "    raise OSError(errno.ENOSPC, 'No space left on device', f'{settings.model_dir}/model.keras')\n"
              "sys.argv[0] = 'trainer.main'\n"
              "cli.run('trainer.main', main, Settings)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=user_env(), capture_output=True, text=True,
                          timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr
    assert "no space left writing runs/x/model.keras" in lines[0] and "rerun the same command" in lines[0]
