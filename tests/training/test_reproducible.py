"""What README.md promises of reproducibility: a run's flags.txt with --deterministic, on the same machine and
versions, trains the same weights bit for bit and reports the same numbers."""

import dataclasses
import json

import keras
import numpy as np

from tests.training.test_end_to_end import tiny_config
from trainer.training import train
from trainer.training.config import parse


def test_flags_txt_with_deterministic_retrains_the_same_weights(tiny_data_dir, tmp_path):
    first = tiny_config(tiny_data_dir, tmp_path / "first", phase2_epochs=2, deterministic=True, augment="recipe")
    train.run(first)
    again = dataclasses.replace(parse([f"--flagfile={tmp_path / 'first' / 'flags.txt'}"]),
                                model_dir=str(tmp_path / "again"))
    train.run(again)
    weights = [keras.saving.load_model(tmp_path / run / "model.keras", compile=False).get_weights()
               for run in ("first", "again")]
    assert all(np.array_equal(a, b) for a, b in zip(*weights))
    figures = [json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("first", "again")]
    assert figures[0]["validation"] == figures[1]["validation"]
    assert figures[0]["best_val_macro_f1"] == figures[1]["best_val_macro_f1"]
