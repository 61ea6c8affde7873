"""A trained model.keras opens with plain Keras, and model.keras files of earlier versions still open through
trained_model.load_trained; a run whose model.keras or labels.json cannot be used ends in one line naming the
file and what to do, in the library and on the command line (exactly one error line, status 2, no traceback)."""

import json
import pathlib
import re
import shutil
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
from PIL import Image

from pipelines import BackboneScaling
from tests.evaluation.common import pattern
from tests.training.test_plain_keras import assert_only_keras_inference, plain_keras_outputs
from tfds_rarespecies import labels
from trainer import cli
from trainer.serving import trained_model
from trainer.training import models, objectives
from trainer.training.config import Config
from trainer.training.run_dir import RunFiles


def _copy_run(trained_run: str, model_dir: pathlib.Path) -> RunFiles:
    files = RunFiles(model_dir)
    model_dir.mkdir()
    for name in ("model", "labels", "flagfile"):
        shutil.copy(getattr(RunFiles(pathlib.Path(trained_run)), name), getattr(files, name))
    return files


@pytest.mark.slow
def test_a_trained_model_keras_opens_in_plain_keras(trained_run, tmp_path):
    """The demo's kind of run (phase 1 on cached embeddings compiles the head alone, with a phylum head):
    plain Keras, unable to import this project, gives load_trained's answers on the same pixels."""
    model_path = RunFiles(pathlib.Path(trained_run)).model
    assert_only_keras_inference(model_path)
    images = np.random.default_rng(3).integers(0, 256, (4, 32, 32, 3)).astype(np.float32)
    [plain] = plain_keras_outputs([(model_path, images)], tmp_path)
    project = trained_model.load_trained(trained_run).probabilities(images)
    assert set(plain) == set(project) == {"phylum", "family"}
    for head, rows in project.items():
        np.testing.assert_allclose(plain[head], rows, rtol=1e-5, atol=1e-6)


def test_a_model_keras_of_an_earlier_version_still_loads(tmp_path):
    """Before 2026-12-06 model.keras scaled with BackboneScaling and kept the head's phase-1 compilation
    (SmoothedCrossentropy, MacroF1): load_trained still opens it and answers as the model that was saved."""
    config = Config(backbone="baseline_cnn", image_size=32, weights="none", model_dir=str(tmp_path),
                    heads=("phylum", "family"))
    names = {"family": labels.families(), "phylum": labels.phyla()}
    num_classes = {rank: len(rank_names) for rank, rank_names in names.items()}
    classifier = models.build_classifier(config, [], num_classes)
    classifier.head.compile(optimizer="adam", **objectives.compile_arguments(
        "family", 0.3, 0.1, num_classes, one_hot_labels=False))
    rng = np.random.default_rng(4)
    classifier.head.fit(rng.normal(size=(8, classifier.head.input_shape[-1])),
                        {rank: rng.integers(0, count, 8) for rank, count in num_classes.items()}, verbose=0)
    images = keras.Input((32, 32, 3), name="image")
    legacy = keras.Model(images, classifier.head(classifier.embedder(BackboneScaling("baseline_cnn")(images))))
    files = RunFiles(tmp_path)
    legacy.save(files.model)
    files.labels.write_text(json.dumps({rank: list(rank_names) for rank, rank_names in names.items()}))
    with zipfile.ZipFile(files.model) as archive:
        config_text = archive.read("config.json").decode()
    assert all(f'"rare_species>{name}"' in config_text for name in ("BackboneScaling", "SmoothedCrossentropy"))
    pixels = rng.uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    loaded = trained_model.load_trained(tmp_path)
    assert loaded.label_rank == "family"
    for head, rows in loaded.probabilities(pixels).items():
        np.testing.assert_allclose(rows, legacy(pixels)[head], rtol=1e-5, atol=1e-6)


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
