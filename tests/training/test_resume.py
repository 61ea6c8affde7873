"""A run killed mid-phase and restarted with the same command continues where it was."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

REPO = pathlib.Path(__file__).parents[2]
EPOCHS = 20  # of 6 steps: long enough that a loaded machine's test process sees epoch 2 before the run ends


def command(data_dir, model_dir) -> list[str]:
    return [sys.executable, "-m", "trainer.main", f"--data_dir={data_dir}", f"--model_dir={model_dir}",
            "--dataset_config=small_128", "--backbone=baseline_cnn", "--weights=none", "--image_size=32",
            "--batch_size=8", "--steps_per_epoch=6", "--phase1_epochs=1", f"--phase2_epochs={EPOCHS}",
            "--unfreeze_layers=-1",
            "--early_stopping_patience=1000", "--strategy=one_device"]


def logged_epochs(model_dir: pathlib.Path, phase: str) -> list[int]:
    log = model_dir / "logs" / f"{phase}.csv"
    return pd.read_csv(log)["epoch"].tolist() if log.exists() and log.stat().st_size else []


def _start_and_stop(data_dir, model_dir, env, stop: signal.Signals) -> subprocess.Popen:
    """Starts a run and sends it `stop` once phase 2 has logged two epochs. The run starts with SIGINT at its
    default, as from a terminal: a process started with SIGINT ignored keeps ignoring it (Python installs no
    KeyboardInterrupt handler then), and the test process may have inherited it ignored from its runner."""
    first = subprocess.Popen(command(data_dir, model_dir), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while len(logged_epochs(model_dir, "phase2")) < 2 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(stop)
    return first


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT], ids=["kill_mid_write", "ctrl_c"])
def test_stopped_run_resumes_from_its_last_epoch(tiny_data_dir, tmp_path, stop):
    """SIGKILL, with the resume state then torn as a kill while it is written leaves it (the rerun falls back to
    the state before: the epoch in flight is the only one trained twice); Ctrl-C, which stops in one line."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    first = _start_and_stop(tiny_data_dir, tmp_path, env, stop)
    _, stderr = first.communicate(timeout=120)
    before = logged_epochs(tmp_path, "phase2")
    assert 2 <= len(before) < EPOCHS and (tmp_path / "backup" / "phase2").exists()
    in_flight = 0
    if stop == signal.SIGKILL:
        latest = tmp_path / "backup" / "phase2" / "latest.weights.h5"
        latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
        in_flight = 1
    else:
        assert first.returncode == 130
        assert stderr.strip().splitlines()[-1] == "trainer.main: interrupted; rerun the same command to resume"
        assert "Traceback" not in stderr

    second = subprocess.run(command(tiny_data_dir, tmp_path), cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "phase1: already complete (1 epochs), skipped" in second.stdout
    assert f"Epoch 1/{EPOCHS}" not in second.stdout  # phase 2 did not start over
    epochs = logged_epochs(tmp_path, "phase2")
    assert epochs[:len(before)] == before and epochs[len(before)] >= before[-1] + 1 - in_flight
    assert len(epochs) - len(set(epochs)) <= in_flight and epochs[-1] == EPOCHS - 1
    assert sorted(set(epochs)) == list(range(EPOCHS))
    assert logged_epochs(tmp_path, "phase1") == [0]
    assert (tmp_path / "metrics.json").exists() and not (tmp_path / "backup" / "phase2").exists()
