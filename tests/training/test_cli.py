"""`python -m trainer.main` as a user meets it: --helpfull, one error line with exit status 2 per mistake, and
`~` in a path flag expanded (--help of every command: tests/test_help.py)."""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import pytest

from trainer.training.config import Config

REPO = pathlib.Path(__file__).parents[2]


def trainer_main(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-m", "trainer.main", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def test_helpfull_documents_every_flag():
    done = trainer_main("--helpfull")  # absl ends help with exit status 1
    for field in dataclasses.fields(Config):
        assert f"--{field.name}:" in done.stdout or f"--[no]{field.name}:" in done.stdout, field.name


@pytest.mark.parametrize("args, message", [
    (["--backbone=resnet9000"], "flag --backbone=resnet9000: value should be one of <baseline_cnn|"),
    (["--weights=/no/such/weights.h5"], "--weights=/no/such/weights.h5: no such file"),
    (["--backbone=mobilenetv2", "--image_size=20"], "--image_size=20 is below mobilenetv2's minimum 32"),
    (["--aux_loss_weight=0.3"], "--aux_loss_weight=0.3 with --heads=: give other ranks a weight above 0"),
    (["--data_dir={empty}"], "rare_species/small_128 is not built in {empty}: run `tfds build rare_species"),
], ids=["unknown_backbone", "missing_weights", "image_too_small", "aux_weight_without_head", "dataset_not_built"])
def test_mistakes_end_in_one_error_line(args, message, tmp_path):
    empty = tmp_path / "empty"
    done = trainer_main("--flagfile=configs/demo.flags", f"--model_dir={tmp_path / 'run'}",
                        *(arg.format(empty=empty) for arg in args))
    errors = [line for line in done.stderr.splitlines() if line.startswith("trainer.main: error:")]
    assert done.returncode == 2, done.stderr
    assert len(errors) == 1 and message.format(empty=empty) in errors[0]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()


def test_a_tilde_in_data_dir_and_model_dir_is_home_and_the_test_split_is_the_final_test(tiny_data_dir, tmp_path):
    """The shell leaves `~` after `=` alone; the command expands it. The run's one test figure is labelled
    the final test, in the console and in metrics.json."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "data").symlink_to(tiny_data_dir)
    env = {**os.environ, "HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-m", "trainer.main", "--flagfile=configs/demo.flags", "--data_dir=~/data",
                           "--model_dir=~/run", "--image_size=32", "--phase2_epochs=0", "--steps_per_epoch=2"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    flags = (home / "run" / "flags.txt").read_text().splitlines()
    assert f"--data_dir={home / 'data'}" in flags and f"--model_dir={home / 'run'}" in flags
    assert not (REPO / "~").exists()
    metrics = json.loads((home / "run" / "metrics.json").read_text())
    assert metrics["final_test_split"] == "test" and 0 <= metrics["test"]["macro_f1"] <= 1
    [row] = [line for line in done.stdout.splitlines() if line.startswith("final test")]
    assert f"{metrics['test']['macro_f1']:.4f}" in row


_IMPORT_EVERY_MODULE = """
import pkgutil, importlib, json
from absl import app, flags, logging  # the libraries' own flags (absl's logging, TF's, TFDS') are not ours
import tensorflow, tensorflow_datasets, optuna, keras
before = set(flags.FLAGS)
import trainer
names = [m.name for m in pkgutil.walk_packages(trainer.__path__, "trainer.") if not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"modules": names, "defined": sorted(set(flags.FLAGS) - before)}))
"""


def test_importing_any_trainer_module_defines_no_flag():
    """Flags belong to the entry points (cli.run under __main__); a library import leaves absl's FLAGS alone."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", _IMPORT_EVERY_MODULE], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"trainer.training.train", "trainer.tune", "trainer.tuning.worker", "trainer.serving.trained_model",
            "trainer.auditing.run"} <= set(report["modules"])
    assert report["defined"] == []
