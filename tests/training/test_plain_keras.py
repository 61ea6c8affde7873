"""model.keras opens with plain `keras.saving.load_model` in a Python that cannot import this project, for every
architecture of the backbone table, and answers as the model that was saved; it holds only Keras' classes and
no training state.

The plain side runs in a subprocess whose first meta-path finder refuses `trainer`, `pipelines` and
`tfds_rarespecies` (the venv's editable install would find them otherwise); the subprocess proves the refusal
before loading. tests/evaluation/test_model_files.py runs the same check on a model trained end to end, against
the project's own loader (load_trained).
"""

import json
import pathlib
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

from pipelines import backbones
from tests.conftest import once
from trainer.training import models
from trainer.training.config import Config

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROJECT = ("trainer", "pipelines", "tfds_rarespecies")

PLAIN_KERAS = """
import importlib.abc, json, sys

BLOCKED = set(json.loads(sys.argv[1]))


class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"{name} is refused: plain Keras must not need it")


sys.meta_path.insert(0, Refuse())
for name in BLOCKED:
    try:
        __import__(name)
    except ImportError:
        continue
    raise SystemExit(f"{name} was importable")

import keras
import numpy as np

for model_path, images_path, out_path in json.loads(sys.argv[2]):
    model = keras.saving.load_model(model_path)
    outputs = model.predict(np.load(images_path), verbose=0)
    np.savez(out_path, **{head: np.asarray(rows) for head, rows in outputs.items()})
leaked = sorted(name for name in sys.modules if name.partition(".")[0] in BLOCKED)
if leaked:
    raise SystemExit(f"loaded {leaked}")
"""


def plain_keras_outputs(pairs: list[tuple[pathlib.Path, np.ndarray]], work: pathlib.Path
                        ) -> list[dict[str, np.ndarray]]:
    """Each (model.keras, 0..255 images) answered by plain Keras in one subprocess that cannot import the
    project (even with the repository on PYTHONPATH)."""
    jobs = []
    for index, (model_path, images) in enumerate(pairs):
        np.save(work / f"images_{index}.npy", images)
        jobs.append((str(model_path), str(work / f"images_{index}.npy"), str(work / f"outputs_{index}.npz")))
    done = subprocess.run([sys.executable, "-c", PLAIN_KERAS, json.dumps(PROJECT), json.dumps(jobs)], cwd=work,
                          capture_output=True, text=True, timeout=600,
                          env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    return [dict(np.load(out_path)) for _, _, out_path in jobs]


def serialized(node) -> list[dict]:
    """Every object a Keras config serializes (a dict with a class_name), nested ones too."""
    if isinstance(node, list):
        return [found for value in node for found in serialized(value)]
    if not isinstance(node, dict):
        return []
    return [node] * ("class_name" in node) + [found for value in node.values() for found in serialized(value)]


def assert_only_keras_inference(model_path: pathlib.Path) -> None:
    """Only Keras' own classes (no `rare_species>` registrations, no module of this project) and no training
    state: no compiled loss or metrics at any level, no optimizer variables."""
    with zipfile.ZipFile(model_path) as archive:
        config_text, names = archive.read("config.json").decode(), archive.namelist()
    objects = serialized(json.loads(config_text))
    foreign = [(found.get("module"), found["class_name"]) for found in objects
               if not (found.get("module") or "keras").startswith("keras")
               or str(found.get("registered_name")).startswith("rare_species")]
    assert objects and not foreign, foreign
    compiled = [found["name"] for found in objects if found.get("compile_config")]  # Keras writes {} uncompiled
    assert not compiled, f"compiled (loss, metrics) inside model.keras: {compiled}"
    assert sorted(names) == ["config.json", "metadata.json", "model.weights.h5"]


# One small backbone per scaling row of the table: the scaling layer is the only part of the saved file this
# project writes in front of keras.applications' own standard layers, and test_backbones.py checks every
# backbone's scaling layer against the table bit for bit (test_the_cases_cover_every_scaling_row keeps a new
# row from going untested). Plus one model built under mixed precision (its layers save float16 policies).
ARCHITECTURES = ("baseline_cnn", "densenet121", "efficientnetb0", "mobilenetv2")
CASES = {**{name: (name, "float32") for name in ARCHITECTURES}, "baseline_cnn_mixed": ("baseline_cnn", "mixed_float16")}


def saved_serving_model(name: str, policy: str, path: pathlib.Path) -> tuple[np.ndarray, dict]:
    """The serving model of backbone `name` with random weights at its smallest input, a family and a phylum
    head, saved to path as train.run saves it; returns random 0..255 images and its answers to them."""
    spec = backbones.get_backbone(name)
    config = Config(backbone=name, image_size=spec.min_input_size, weights="none", model_dir="unused",
                    heads=("phylum", "family"), dense_units=8)
    keras.mixed_precision.set_global_policy(policy)
    try:
        serving = models.build_classifier(config, [], {"phylum": 2, "family": 3}).serving
    finally:
        keras.mixed_precision.set_global_policy("float32")
    images = np.random.default_rng(0).uniform(0, 255, (2, *serving.input_shape[1:])).astype("float32")
    serving.save(path)
    answers = serving.predict(images, verbose=0)
    keras.backend.clear_session()
    return images, answers


@pytest.fixture(scope="module")
def saved_per_case(shared_dir):
    """For each case: (model.keras, the in-memory serving model's answers, plain Keras' answers); made once for
    every xdist worker, the answers kept in .npz files beside the models."""
    def make(work: pathlib.Path) -> dict:
        work.mkdir(parents=True, exist_ok=True)
        saved = {case: (work / f"{case}.keras", *saved_serving_model(name, policy, work / f"{case}.keras"))
                 for case, (name, policy) in CASES.items()}
        plain = plain_keras_outputs([(path, images) for path, images, _ in saved.values()], work)
        for (case, (_, _, project)), answers in zip(saved.items(), plain):
            np.savez(work / f"{case}_project.npz", **project)
            np.savez(work / f"{case}_plain.npz", **answers)
        return {case: str(path) for case, (path, _, _) in saved.items()}

    paths = once(shared_dir, "plain_keras", make)
    work = shared_dir / "plain_keras"
    return {case: (pathlib.Path(path), dict(np.load(work / f"{case}_project.npz")),
                   dict(np.load(work / f"{case}_plain.npz"))) for case, path in paths.items()}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_every_architecture_saves_a_file_plain_keras_loads(saved_per_case, case):
    path, project, plain = saved_per_case[case]
    assert_only_keras_inference(path)
    assert set(plain) == set(project) == {"phylum", "family"}
    for head, rows in project.items():
        np.testing.assert_allclose(plain[head], rows, rtol=1e-5, atol=1e-6)


def test_the_serving_model_scales_with_keras_rescaling():
    """Its front is the backbone table's scaling as keras.layers.Rescaling, nothing of this project."""
    config = Config(backbone="densenet121", image_size=32, weights="none", model_dir="unused")
    serving = models.build_classifier(config, [], {"family": 3}).serving
    scaling = serving.get_layer("scaling")
    assert type(scaling) is keras.layers.Rescaling
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(scaling(pixels), config.backbone_spec.preprocess(pixels))


def test_the_cases_cover_every_scaling_row():
    covered = {backbones.get_backbone(name).preprocessing for name in ARCHITECTURES}
    assert covered == {row.preprocessing for row in backbones.BACKBONES.values()}
