"""Fixtures of the evaluation room's tests: one tiny run of the real trainer, shared by evaluate and predict."""

import pytest
import tensorflow_datasets as tfds

from trainer.config import Config


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_data_dir) -> str:
    """A baseline CNN at 32 px trained by trainer.train.run on the tiny dataset like configs/demo.flags
    trains (phase 1 on cached embeddings, then every layer), so the saved model is the demo's kind.

    Trained once per test process: the run directory lives at a fixed place under the session's temp root, so
    test_predict.py (which imports this fixture) reuses it.
    """
    from trainer import train

    model_dir = tmp_path_factory.getbasetemp() / "trained_run"
    if not (model_dir / "model.keras").exists():
        train.run(Config(data_dir=tiny_data_dir, dataset_config="small_128", model_dir=str(model_dir),
                         backbone="baseline_cnn", weights="none", image_size=32, dense_units=0, batch_size=16,
                         phase1_epochs=1, phase1_cached_features=True, phase1_learning_rate=1e-2,
                         phase2_epochs=1, unfreeze_layers=-1, phase2_learning_rate=1e-2, warmup_epochs=0,
                         class_weights="none"))
    return str(model_dir)


@pytest.fixture(scope="session")
def split_sizes(tiny_data_dir) -> dict[str, int]:
    builder = tfds.builder("rare_species", config="small_128", data_dir=tiny_data_dir)
    return {name: split.num_examples for name, split in builder.info.splits.items()}
