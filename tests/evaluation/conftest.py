"""Fixtures of the evaluation room's tests: tiny runs of the real trainer (a family model with a phylum head,
shared by evaluate, predict and the LiteRT tests; a species model; a model with phylum, order and family heads),
the first's LiteRT exports, and a folder of odd and broken photos."""

import dataclasses
import pathlib
import shutil

import pytest
import tensorflow_datasets as tfds
from PIL import Image

from tests.evaluation.common import pattern
from trainer.training.config import Config
from trainer.training.run_dir import RunFiles


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_data_dir) -> str:
    """A baseline CNN at 32 px with a phylum head, trained by trainer.training.train.run on the tiny dataset like
    configs/demo.flags trains (phase 1 on cached embeddings, then every layer), so the saved model is the
    demo's kind; eight phase-2 epochs (~10 s) make it sure of its answers (validation accuracy 1.0, top-1
    margins ~0.15-0.95), so a LiteRT model's agreement with it measures the conversion, not coin flips.

    Trained once per test process: the run directory lives at a fixed place under the session's temp root, so
    test_predict.py (which imports this fixture) reuses it.
    """
    return _train_once(tmp_path_factory, tiny_data_dir, "trained_run", heads=("phylum", "family"),
                       aux_loss_weight=0.3)


@pytest.fixture(scope="session")
def species_run(tmp_path_factory, tiny_data_dir) -> str:
    """trained_run's recipe at --label_rank=species with one head (fewer phase-2 epochs: its answers are
    judged for their form, not their quality)."""
    return _train_once(tmp_path_factory, tiny_data_dir, "species_run", label_rank="species", phase2_epochs=3)


@pytest.fixture(scope="session")
def hierarchical_run(tmp_path_factory, tiny_data_dir) -> str:
    """trained_run's recipe with hierarchical heads phylum, order and family (label rank family)."""
    return _train_once(tmp_path_factory, tiny_data_dir, "hierarchical_run", heads=("phylum", "order", "family"),
                       aux_loss_weight=0.3, phase2_epochs=3)


def _train_once(tmp_path_factory, data_dir: str, name: str, **changes) -> str:
    """A run of the shared recipe under the session's temp root, trained when it is not there yet."""
    from trainer.training import train

    model_dir = tmp_path_factory.getbasetemp() / name
    if not (model_dir / "model.keras").exists():
        base = Config(data_dir=data_dir, dataset_config="small_128", model_dir=str(model_dir),
                      backbone="baseline_cnn", weights="none", image_size=32, dense_units=0, batch_size=16,
                      phase1_epochs=1, phase1_cached_features=True, phase1_learning_rate=1e-2,
                      phase2_epochs=8, unfreeze_layers=-1, phase2_learning_rate=1e-2, warmup_epochs=0,
                      class_weights="none")
        train.run(dataclasses.replace(base, **changes))
    return str(model_dir)


@pytest.fixture(scope="session")
def split_sizes(tiny_data_dir) -> dict[str, int]:
    builder = tfds.builder("rare_species", config="small_128", data_dir=tiny_data_dir)
    return {name: split.num_examples for name, split in builder.info.splits.items()}


@pytest.fixture(scope="session")
def litert_run(tmp_path_factory, trained_run) -> str:
    """A copy of trained_run's model.keras, labels.json and flags.txt with its float32 and int8 LiteRT exports
    (the export command, in process), so tests that export or evaluate again do not touch trained_run. The int8
    export keeps any agreement (--min_agreement=0): on 8 validation images one flipped answer is 0.875, and
    which image sits near a tie depends on the CPU's float kernels (CI's flipped one); the floor's refusal has
    its own test."""
    from trainer.serving import export

    model_dir = tmp_path_factory.mktemp("litert_run")
    source, copy = RunFiles(pathlib.Path(trained_run)), RunFiles(model_dir)
    for name in ("model", "labels", "flagfile"):
        shutil.copy(getattr(source, name), getattr(copy, name))
    for quantize in ("float32", "int8"):
        export.export(export.ExportSettings(str(model_dir), format="litert", quantize=quantize,
                                            min_agreement=0.0 if quantize == "int8" else -1.0))
    return str(model_dir)


@pytest.fixture
def photo_folder(tmp_path) -> pathlib.Path:
    """Four odd-but-valid images (CMYK, grayscale, RGB, PNG bytes behind .jpg), a truncated JPEG and a note."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(pattern(120, 90, 0)).save(folder / "photo.jpg")
    Image.fromarray(pattern(60, 200, 1)[..., 0]).save(folder / "gray.jpg")
    Image.fromarray(pattern(70, 70, 2)).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(pattern(80, 80, 3)).save(folder / "sub" / "png_named.jpg", "PNG")
    whole = (folder / "photo.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (folder / "notes.txt").write_text("not an image")
    return folder
