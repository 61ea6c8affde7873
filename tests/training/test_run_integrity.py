"""A run directory is one run's: one writer at a time, nothing adopted that is not this run, nothing continued on
another dataset, and a start that fails writes nothing a corrected command would trip over."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import user_env
from tests.training.test_end_to_end import tiny_config
from tests.training.test_resume import REPO, command, logged_epochs
from trainer.training import train
from trainer.training.config import ConfigError
from trainer.training.run_dir import FolderLock, RunFiles, RunLockedError


@pytest.mark.slow
def test_two_processes_into_one_model_dir_one_refuses_the_other_finishes_and_a_rerun_completes(tiny_data_dir,
                                                                                                tmp_path):
    model_dir = tmp_path / "run"
    first = subprocess.Popen(command(tiny_data_dir, model_dir), cwd=REPO, env=user_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not logged_epochs(model_dir, "phase1") and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, "the first run ended before the second could start"
    second = subprocess.run(command(tiny_data_dir, model_dir), cwd=REPO, env=user_env(), capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pid {first.pid} on " in lines[0] and "rerunning the same command" in lines[0]
    assert first.wait(timeout=600) == 0, first.stderr.read()[-2000:]
    history = (model_dir / "logs" / "phase2.csv").read_text().splitlines()
    assert sum(line.startswith("epoch") for line in history) == 1  # one header: one writer
    rerun = subprocess.run(command(tiny_data_dir, model_dir), cwd=REPO, env=user_env(), capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]


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


def test_a_failed_start_writes_nothing_and_the_corrected_command_runs(tiny_data_dir, tmp_path):
    not_weights = tmp_path / "weights.weights.h5"
    not_weights.write_text("not an HDF5 file")
    model_dir = tmp_path / "run"
    config = tiny_config(tiny_data_dir, model_dir, phase2_epochs=1)
    with pytest.raises(ConfigError, match="--weights=.*could not be loaded.*--weights=none") as refused:
        train.run(tiny_config(tiny_data_dir, model_dir, phase2_epochs=1, weights=str(not_weights)))
    assert "\n" not in str(refused.value)
    assert RunFiles(model_dir).run_files_present() == []
    assert train.run(config)["label_rank"] == "family"


@pytest.fixture(scope="module")
def finished(tiny_data_dir, tmp_path_factory):
    """A finished run on a copy of the tiny dataset that the tests below may rebuild in place."""
    data_dir = tmp_path_factory.mktemp("data")
    shutil.copytree(tiny_data_dir, data_dir, dirs_exist_ok=True)
    config = tiny_config(str(data_dir), tmp_path_factory.mktemp("run"), phase2_epochs=1)
    train.run(config)
    return config


def test_a_run_records_what_it_was_trained_on(finished):
    record = json.loads(RunFiles(pathlib.Path(finished.model_dir)).trained_on.read_text())
    assert record["dataset"] == "rare_species/small_128/1.1.0" and record["weights"] == "none"
    assert set(record["examples"]) == set(record["split_digests"]) == {"train", "validation", "test"}
    assert all(len(digest) == 64 for digest in record["split_digests"].values())


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
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    args = {"main": ["trainer.main", f"--model_dir={a_file}/run", "--backbone=baseline_cnn", "--weights=none",
                     f"--data_dir={tiny_data_dir}", "--dataset_config=small_128", "--image_size=32"],
            "tune": ["trainer.tune", "--flagfile=configs/tune_demo.flags", f"--data_dir={tiny_data_dir}",
                     "--study_name=s", f"--tune_dir={a_file}", "--n_trials=1"],
            "audit": ["trainer.audit", f"--data_dir={tiny_data_dir}", "--config=small_128", "--embedder=color_stats",
                      f"--out={a_file}"]}[command]
    assert f"{a_file} is a file, not a folder" in _one_line_error(args)
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
        line = _one_line_error(["trainer.tune", "--flagfile=configs/tune_demo.flags", f"--data_dir={tiny_data_dir}",
                                "--study_name=s", f"--tune_dir={tmp_path / 'tune'}", "--n_trials=1"])
        assert f"being written by pid {holder.pid}" in line and "--study_name=s" in line
        assert sorted(path.name for path in study_dir.iterdir()) == [f".lock-{os.uname().nodename}"]
    finally:
        holder.kill()


def test_a_full_disk_is_one_line(tmp_path):
    """Any command's writer meeting ENOSPC (here a main raising it, as a full disk makes write() do)."""
    script = ("import errno, sys\n"
              "from trainer import cli\n"
              "cli.quiet_native_logs()\n"
              "from trainer.training.config import Config\n"
              "def main(config):\n"
              "    raise OSError(errno.ENOSPC, 'No space left on device', 'runs/x/model.keras')\n"
              "sys.argv[0] = 'trainer.main'\n"
              "cli.run('trainer.main', main, Config)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=user_env(), capture_output=True, text=True,
                          timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr
    assert "no space left writing runs/x/model.keras" in lines[0] and "rerun the same command" in lines[0]
