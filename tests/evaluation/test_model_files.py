"""A run whose model.keras or labels.json cannot be used ends in one line naming the file and what to do, in
the library (trained_model.load_trained) and on the command line (exactly one error line, status 2, no traceback)."""

import json
import pathlib
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

from tests.evaluation.common import pattern
from tfds_rarespecies import labels
from trainer import cli
from trainer.serving import trained_model
from trainer.training.run_dir import RunFiles


def _copy_run(trained_run: str, model_dir: pathlib.Path) -> RunFiles:
    files = RunFiles(model_dir)
    model_dir.mkdir()
    for name in ("model", "labels", "flagfile"):
        shutil.copy(getattr(RunFiles(pathlib.Path(trained_run)), name), getattr(files, name))
    return files


def _random_bytes(files: RunFiles) -> None:
    files.model.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())


def _lambda_layer(files: RunFiles) -> None:
    """A model Keras' safe mode refuses: a Lambda layer's Python code would run while loading."""
    images = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Lambda(lambda x: x / 255.0)(images))
    keras.Model(images, {"family": keras.layers.Dense(202, activation="softmax")(pooled)}).save(files.model)


def _truncated(files: RunFiles) -> None:
    files.model.write_bytes(files.model.read_bytes()[:2000])


def _missing_head(files: RunFiles) -> None:
    files.labels.write_text(json.dumps({"family": list(labels.families())}))


def _other_labels(files: RunFiles) -> None:
    files.labels.write_text(json.dumps({"family": ["apidae"], "phylum": list(labels.phyla())}))


@pytest.mark.parametrize("damage, words", [
    (_random_bytes, "model.keras: not a readable Keras model (not a .keras zip archive"),
    (_truncated, "model.keras: not a readable Keras model ("),
    (_lambda_layer, "model.keras: Keras' safe mode refuses to load it"),
    (_other_labels, "labels.json: 1 family names for the 202 family outputs"),
    (_missing_head, "labels.json names the heads family but"),
    (lambda files: files.labels.write_text("{"), "labels.json: not the run's label names")])
def test_unusable_run_files_are_one_line(trained_run, tmp_path, damage, words):
    files = _copy_run(trained_run, tmp_path / "run")
    damage(files)
    with pytest.raises(trained_model.ModelFileError, match=re.escape(words)) as raised:
        trained_model.load_trained(files.model_dir)
    message = str(raised.value)
    assert "\n" not in message and "not found" not in message and "retrain" in message


@pytest.mark.slow
@pytest.mark.parametrize("damage, command, words", [
    (_random_bytes, ["trainer.export"], "not a readable Keras model"),
    (_lambda_layer, ["trainer.predict", "photo.jpg"], "safe mode refuses")])
def test_command_line_names_the_file_once(trained_run, tmp_path, damage, command, words):
    files = _copy_run(trained_run, tmp_path / "run")
    damage(files)
    Image.fromarray(pattern(40, 40, 0)).save(tmp_path / "photo.jpg")
    program, *arguments = command
    result = subprocess.run([sys.executable, "-m", program, f"--model_dir={files.model_dir}", *arguments],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"{program}: error: ")]
    assert result.returncode == cli.EXIT_USAGE and len(errors) == 1, result.stderr[-2000:]
    assert f"{files.model}: " in errors[0] and words in errors[0] and "retrain" in errors[0]
    assert "Traceback" not in result.stderr
