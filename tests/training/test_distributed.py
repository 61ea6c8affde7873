"""Training under tf.distribute on CPU: MirroredStrategy over two logical devices, MultiWorkerMirroredStrategy
as two local processes sharing one model_dir. Each run is a subprocess, so devices are configured before
TensorFlow starts."""

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

import pipelines  # registers the classes model.keras files written before 2026-12-06 name
from tests.conftest import free_ports
from trainer.training import config as config_lib

REPO = pathlib.Path(__file__).parents[2]

# Phase 1 only (frozen backbone, BatchNormalization in inference mode) and no dropout: the replicas then compute
# exactly what one device computes on the whole batch, up to the order of floating-point sums.
HEAD_ONLY = ["--backbone=baseline_cnn", "--weights=none", "--dataset_config=small_128", "--image_size=32",
             "--phase1_epochs=3", "--phase1_learning_rate=0.01", "--phase2_epochs=0", "--pool_dropout=0",
             "--dense_dropout=0", "--warmup_epochs=0", "--deterministic", "--seed=3"]


def cpu_env(**extra: str) -> dict:
    # oneDNN's fused CPU BatchNormalization fails on the empty per-replica batch an uneven evaluation ends with.
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", "TF_ENABLE_ONEDNN_OPTS": "0",
            **extra}


def trainer_main(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "trainer.main", *args], cwd=REPO, env=cpu_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def metrics(model_dir: pathlib.Path) -> dict:
    return json.loads((model_dir / "metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("cached", [False, True], ids=["images", "cached_features"])
def test_mirrored_on_two_devices_matches_one_device_at_the_same_global_batch(tiny_data_dir, tmp_path, cached):
    """Also with phase 1 on cached embeddings, which a model built under MirroredStrategy computes (the cache
    once held two rows per image there)."""
    head_only = [*HEAD_ONLY, f"--{'' if cached else 'no'}phase1_cached_features"]
    trainer_main(*head_only, f"--data_dir={tiny_data_dir}", f"--model_dir={tmp_path / 'one'}",
                 "--strategy=one_device", "--batch_size=4")
    trainer_main(*head_only, f"--data_dir={tiny_data_dir}", f"--model_dir={tmp_path / 'two'}",
                 "--strategy=mirrored", "--cpu_devices=2", "--batch_size=2")
    one, two = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert (one["replicas"], two["replicas"]) == (1, 2)
    assert one["global_batch_size"] == two["global_batch_size"] == 4
    logs = [pd.read_csv(tmp_path / name / "logs" / "phase1.csv") for name in ("one", "two")]
    np.testing.assert_allclose(logs[1]["val_loss"], logs[0]["val_loss"], rtol=1e-4)
    for split in ("validation", "test"):
        for name in ("accuracy", "macro_f1", "macro_auc"):
            assert two[split][name] == pytest.approx(one[split][name], abs=1e-6)


def sklearn_macro_f1(model_dir: pathlib.Path) -> float:
    """scikit-learn's macro-F1 of the saved model over every image of the run's validation split."""
    config = config_lib.parse([f"--flagfile={model_dir / 'flags.txt'}"])
    raw = pipelines.InputConfig(
        data_dir=config.data_dir, dataset_config=config.dataset, backbone=config.backbone,
        image_size=config.input_size, batch_size=16, augment_on_device=True)  # 0..255 images, as served
    images, truth = zip(*pipelines.make_dataset(raw, "validation", training=False).as_numpy_iterator())
    truth = np.concatenate(truth)
    guess = keras.saving.load_model(model_dir / "model.keras").predict(np.concatenate(images), verbose=0)
    return f1_score(truth, guess["family"].argmax(1), average="macro")


@pytest.mark.slow
def test_macro_f1_under_mirrored_equals_sklearn_over_the_whole_split(tiny_data_dir, tmp_path):
    """The metric's counts are summed across replicas: the value logged by a two-replica run (uneven last
    step: 6 images in per-replica batches of 2 leave one replica idle) is scikit-learn's over every image."""
    trainer_main(*HEAD_ONLY, f"--data_dir={tiny_data_dir}", f"--model_dir={tmp_path}", "--strategy=mirrored",
                 "--cpu_devices=2", "--batch_size=2", "--phase1_epochs=2")
    results = metrics(tmp_path)
    assert results["best_val_macro_f1"] == pytest.approx(sklearn_macro_f1(tmp_path), abs=1e-6)
    assert results["validation"]["macro_f1"] == pytest.approx(results["best_val_macro_f1"], abs=1e-6)


def start_workers(*args: str, count: int = 2) -> list[subprocess.Popen]:
    """Starts trainer.main as `count` workers of one cluster on 127.0.0.1 (free ports). Output goes to a file
    (worker.log), not a pipe that nobody reads while the workers run: a full pipe would block one worker and,
    through its collective ops, all of them."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(count)]}
    workers = []
    for index in range(count):
        log = tempfile.TemporaryFile("w+")
        task = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        worker = subprocess.Popen([sys.executable, "-m", "trainer.main", *args], cwd=REPO, stdout=log,
                                  stderr=subprocess.STDOUT, text=True, env=cpu_env(TF_CONFIG=json.dumps(task)))
        worker.log = log
        workers.append(worker)
    return workers


def stop(workers: list[subprocess.Popen]) -> list[str]:
    """Kills the workers still running; returns every worker's output."""
    outputs = []
    for worker in workers:
        if worker.poll() is None:
            worker.kill()
        worker.wait()
        worker.log.seek(0)
        outputs.append(worker.log.read())
        worker.log.close()
    return outputs


def run_workers(*args: str, count: int = 2) -> list[str]:
    """Runs `count` workers to the end; returns their outputs once all exited 0 (a failure or a timeout kills
    the rest rather than leave them waiting on a collective)."""
    workers = start_workers(*args, count=count)
    try:
        for worker in workers:
            worker.wait(timeout=600)
    finally:
        outputs = stop(workers)
    assert [worker.returncode for worker in workers] == [0] * count, "\n".join(o[-3000:] for o in outputs)
    return outputs


def results_table(output: str) -> list[str]:
    """The validation and final test rows of the summary a run prints at its end."""
    return [line for line in output.splitlines() if line.startswith(("validation ", "final test "))]


@pytest.mark.slow
def test_multi_worker_on_two_local_processes_completes(tiny_data_dir, tmp_path):
    """MultiWorkerMirroredStrategy, two processes sharing model_dir: both phases train (phase 2 with the whole
    backbone unfrozen), the chief alone writes the run, and the validation macro-F1 counts both workers'
    shards: it is scikit-learn's over the whole split."""
    outputs = run_workers(*HEAD_ONLY, f"--data_dir={tiny_data_dir}", f"--model_dir={tmp_path}",
                          "--strategy=multi_worker", "--batch_size=2", "--phase1_epochs=1", "--phase2_epochs=1",
                          "--unfreeze_layers=-1")
    chief = metrics(tmp_path)
    assert chief["strategy"] == "MultiWorkerMirroredStrategy"
    assert (chief["replicas"], chief["global_batch_size"]) == (2, 4)
    assert (chief["phases"]["phase1"]["epochs"], chief["phases"]["phase2"]["epochs"]) == (1, 1)
    assert (tmp_path / "model.keras").is_file() and (tmp_path / "checkpoints" / "best.weights.h5").is_file()
    assert [len(pd.read_csv(tmp_path / "logs" / f"{phase}.csv")) for phase in ("phase1", "phase2")] == [1, 1]
    # The worker saved into workertemp_1 and deleted it; nothing else in model_dir is not the chief's.
    assert {path.name for path in tmp_path.iterdir()} <= {
        "flags.txt", "trained_on.json", ".lock", "checkpoints", "backup", "logs", "tensorboard", "model.keras",
        "labels.json", "metrics.json", "calibration.json", "taxonomy.tsv"}
    assert not [path for path in tmp_path.rglob("*") if "workertemp" in path.name or path.name.endswith(".partial")]
    assert not [path for path in (tmp_path / "backup").rglob("*") if path.is_file()]
    # Both workers evaluated the same model on the same (whole) splits.
    assert results_table(outputs[0]) == results_table(outputs[1]) and len(results_table(outputs[0])) == 2
    assert chief["validation"]["macro_f1"] == pytest.approx(sklearn_macro_f1(tmp_path), abs=1e-6)


def logged_epochs(model_dir: pathlib.Path, phase: str) -> list[int]:
    log = model_dir / "logs" / f"{phase}.csv"
    return pd.read_csv(log)["epoch"].tolist() if log.exists() and log.stat().st_size else []


@pytest.mark.slow
def test_multi_worker_run_killed_mid_phase_resumes_from_the_chiefs_backup(tiny_data_dir, tmp_path):
    """Both workers killed in phase 2 and restarted: every worker restores the chief's BackupAndRestore state,
    so phase 2 continues from its last saved epoch instead of starting over."""
    epochs = 8
    args = ["--backbone=baseline_cnn", "--weights=none", "--dataset_config=small_128", "--image_size=32",
            f"--data_dir={tiny_data_dir}", f"--model_dir={tmp_path}", "--batch_size=4", "--steps_per_epoch=2",
            "--phase1_epochs=1", f"--phase2_epochs={epochs}", "--unfreeze_layers=-1",
            "--early_stopping_patience=1000", "--strategy=multi_worker"]
    workers = start_workers(*args)
    try:
        deadline = time.monotonic() + 300
        while (len(logged_epochs(tmp_path, "phase2")) < 2 and all(w.poll() is None for w in workers)
               and time.monotonic() < deadline):
            time.sleep(0.05)
    finally:
        stop(workers)
    before = logged_epochs(tmp_path, "phase2")
    assert 2 <= len(before) < epochs and (tmp_path / "backup" / "phase2" / "latest.weights.h5").exists()

    outputs = run_workers(*args)
    for output in outputs:
        assert "phase1: already complete (1 epochs), skipped" in output
        assert f"Epoch 1/{epochs}" not in output  # phase 2 did not start over, on either worker
    resumed = logged_epochs(tmp_path, "phase2")
    assert resumed[:len(before)] == before and resumed[len(before)] > before[-1]
    assert resumed == sorted(set(resumed)) and resumed[-1] == epochs - 1
    assert metrics(tmp_path)["phases"]["phase2"]["epochs"] == len(resumed)
    assert not (tmp_path / "backup" / "phase2").exists() and not list(tmp_path.glob("workertemp*"))


@pytest.mark.slow
@pytest.mark.parametrize("cached", [False, True], ids=["images", "cached_features"])
def test_three_replicas_with_splits_smaller_than_the_global_batch(tiny_data_dir, tmp_path, cached):
    """3 replicas x 4 = 12 images a global batch; the tiny validation and test splits hold 8 each, so every
    evaluation step is uneven across the replicas. oneDNN stays on (as a user has it): its CPU kernels refuse the
    empty per-replica batch an uneven step used to give a replica."""
    env = {key: value for key, value in cpu_env().items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    done = subprocess.run([sys.executable, "-m", "trainer.main", *HEAD_ONLY, "--phase1_epochs=1", "--phase2_epochs=1",
                           "--unfreeze_layers=-1", "--mixed_precision=mixed_bfloat16",
                           f"--{'' if cached else 'no'}phase1_cached_features", f"--data_dir={tiny_data_dir}",
                           f"--model_dir={tmp_path}", "--strategy=mirrored", "--cpu_devices=3", "--batch_size=4"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = metrics(tmp_path)
    assert results["replicas"] == 3 and results["global_batch_size"] == 12
    sizes = json.loads((tmp_path / "trained_on.json").read_text())["examples"]
    assert sizes["validation"] < 12 and sizes["validation"] % 3
    assert len(pd.read_csv(tmp_path / "logs" / "phase2.csv")) == 1
