"""--heads alone trains every head it names, at the documented default auxiliary weight; --aux_loss_weight=0
with other heads is one line; a single-head run takes 0 (earlier runs' flags.txt) or the default."""

import dataclasses
import json

import pandas as pd
import pytest

from trainer.serving import trained_model
from trainer.training import config as config_lib
from trainer.training import train
from trainer.training.config import AUX_LOSS_WEIGHT, Config, ConfigError, validate

TINY = dict(backbone="mobilenetv2", image_size=32, weights="none", model_dir="unused")


def test_heads_alone_train_both_heads(tiny_data_dir, tmp_path):
    """Phase 1 on cached embeddings (the head trained alone) then the whole model: both phases' logs hold both
    losses, and the phylum loss falls, which a head weighted 0 would not do."""
    config = config_lib.parse([
        "--heads=phylum,family", f"--data_dir={tiny_data_dir}", f"--model_dir={tmp_path}",
        "--dataset_config=small_128", "--backbone=baseline_cnn", "--image_size=32", "--weights=none",
        "--dense_units=0", "--batch_size=16", "--steps_per_epoch=6", "--phase1_epochs=3",
        "--phase1_cached_features", "--phase1_learning_rate=1e-2", "--phase2_epochs=2", "--unfreeze_layers=-1",
        "--phase2_learning_rate=1e-2", "--warmup_epochs=0", "--class_weights=none"])
    assert config.aux_loss_weight == AUX_LOSS_WEIGHT == 0.5
    train.run(config)
    assert list(json.loads((tmp_path / "labels.json").read_text())) == ["family", "phylum"]
    assert set(trained_model.load_trained(tmp_path).model.output) == {"family", "phylum"}
    for phase in ("phase1", "phase2"):
        log = pd.read_csv(tmp_path / "logs" / f"{phase}.csv")
        assert {"family_loss", "phylum_loss", "val_family_loss", "val_phylum_loss"} <= set(log), list(log)
    phase1 = pd.read_csv(tmp_path / "logs" / "phase1.csv")
    assert phase1["phylum_loss"].iloc[-1] < phase1["phylum_loss"].iloc[0]


@pytest.mark.parametrize("changes, message", [
    (dict(heads=("phylum", "family"), aux_loss_weight=0.0),
     "--aux_loss_weight=0.0 with --heads=phylum,family: the weight of the phylum head must be finite and above 0 "
     "(at 0 a head learns nothing); leave --aux_loss_weight at its default 0.5"),
    (dict(heads=("phylum", "order", "family"), aux_loss_weight=0.0), "the weight of the phylum, order heads must"),
    (dict(heads=("phylum", "family"), aux_loss_weight=float("nan")), "--aux_loss_weight=nan: not a finite number"),
    (dict(heads=("phylum", "family"), aux_loss_weight=float("inf")), "--aux_loss_weight=inf: not a finite number"),
    (dict(aux_loss_weight=0.3), "--aux_loss_weight=0.3 with --heads=: give other ranks a weight above 0 by listing "
                                "them with --label_rank (e.g. --heads=phylum,family)"),
    (dict(heads=("phylum",), label_rank="phylum", aux_loss_weight=0.3), "(e.g. --heads=phylum,class)"),
])
def test_a_weight_without_meaning_is_one_line(changes, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as raised:
        validate(dataclasses.replace(Config(**TINY), **changes))
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("changes", [
    dict(), dict(aux_loss_weight=0.0), dict(heads=("family",)), dict(heads=("family", "family"), aux_loss_weight=0.0),
    dict(heads=("phylum", "family")), dict(heads=("phylum", "family"), aux_loss_weight=0.3)])
def test_single_heads_take_zero_or_the_default_and_other_heads_any_positive_weight(changes):
    validate(dataclasses.replace(Config(**TINY), **changes))


def test_a_one_head_run_from_before_the_default_changed_still_resumes(tmp_path):
    """Its flags.txt says --aux_loss_weight=0.0 (the default then); the same command today is the same run."""
    from trainer.training import config as config_lib
    from trainer.training import train
    from trainer.training.run_dir import RunFiles

    today = config_lib.Config(model_dir=str(tmp_path), backbone="baseline_cnn", weights="none")
    assert today.aux_loss_weight == config_lib.AUX_LOSS_WEIGHT
    then = config_lib.flagfile_text(today)
    assert "--aux_loss_weight=0.0\n" in then
    RunFiles(tmp_path).flagfile.write_text(then)
    train.check_claim(RunFiles(tmp_path), today)
