"""The trainer's pieces without data: flags <-> config, validation, metrics, schedules, models."""

import dataclasses
import pathlib

import keras
import numpy as np
import pytest
from sklearn.metrics import f1_score

from tfds_rarespecies import labels
from trainer.numbers import metrics
from trainer.training import config as config_lib
from trainer.training import distribute, inputs, models, objectives, schedules
from trainer.training.config import Config, ConfigError, validate

REPO = pathlib.Path(__file__).parents[2]
TINY = dict(backbone="mobilenetv2", image_size=32, weights="none", model_dir="unused")


def test_flagfile_round_trips_every_field(tmp_path):
    config = Config(backbone="xception", image_size=111, heads=("phylum", "family"), aux_loss_weight=0.25,
                    phase2_learning_rate=3.5e-06, data_dir="/data with space", jit_compile=True,
                    model_dir="runs/x")
    text = config_lib.flagfile_text(config)
    assert len(text.splitlines()) == len(dataclasses.fields(Config))
    (tmp_path / "flags.txt").write_text(text)
    assert config_lib.parse([f"--flagfile={tmp_path / 'flags.txt'}"]) == config


def test_a_run_resumes_under_a_flag_added_since_only_at_its_default(tmp_path):
    """flags.txt of a version before --soft_labels_beta: the same run at the default, another one away from it;
    a flag the old file sets otherwise, or one it names that no longer exists, is another run."""
    from trainer.training import train
    from trainer.training.run_dir import RunFiles

    config = Config(model_dir=str(tmp_path), backbone="baseline_cnn", weights="none")
    files = RunFiles(tmp_path)
    older = "\n".join(line for line in config_lib.flagfile_text(config).splitlines()
                      if not line.startswith("--soft_labels_beta="))
    files.flagfile.write_text(older)
    train.check_claim(files, config)  # the same run: no refusal
    with pytest.raises(ConfigError, match=r"other flags \(now --soft_labels_beta=2.0\)"):
        train.check_claim(files, dataclasses.replace(config, soft_labels_beta=2.0))
    with pytest.raises(ConfigError, match=r"other flags \(now --deterministic\)"):
        train.check_claim(files, dataclasses.replace(config, deterministic=not config.deterministic))
    files.flagfile.write_text(older + "\n--phylum_head=true")
    with pytest.raises(ConfigError, match=r"other flags \(now no --phylum_head\)"):
        train.check_claim(files, config)


# configs/tune_*.flags add the tuner's flags; tests/tuning parses those.
TRAINER_FLAGFILES = sorted(path for path in (REPO / "configs").glob("*.flags") if not path.stem.startswith("tune_"))


@pytest.mark.parametrize("flagfile", TRAINER_FLAGFILES, ids=lambda p: p.stem)
def test_shipped_flagfiles_parse_and_validate(flagfile, monkeypatch):
    monkeypatch.chdir(REPO)  # nested --flagfile=configs/... lines are relative to the repo root
    config = config_lib.parse([f"--flagfile={flagfile}", "--model_dir=runs/x"])
    validate(config)
    assert config.input_size >= config.backbone_spec.min_input_size


@pytest.mark.parametrize("changes, message", [
    (dict(image_size=16), "--image_size=16 is below mobilenetv2's minimum 32"),
    (dict(weights="/no/such/file.weights.h5"), "--weights=/no/such/file.weights.h5: no such file"),
    (dict(aux_loss_weight=0.3), "--aux_loss_weight=0.3 with --heads=: give other ranks a weight"),
    (dict(heads=("phylum", "family"), aux_loss_weight=0.0), "--aux_loss_weight=0.0 with --heads=phylum,family"),
    (dict(heads=("phylum", "order"), aux_loss_weight=0.3), "--heads=phylum,order leaves out --label_rank=family"),
    (dict(heads=("family", "tribe"), aux_loss_weight=0.3), "--heads=family,tribe: tribe is no rank"),
    (dict(label_rank="species", dataset_config="small_128_species_disjoint"),
     "--label_rank=species with --dataset_config=small_128_species_disjoint: no validation or test species"),
    (dict(backbone="baseline_cnn", weights="imagenet"), "baseline_cnn has no pretrained weights"),
    (dict(phase1_cached_features=True, augment="light"), "--phase1_cached_features caches un-augmented"),
    (dict(oversample_f1_threshold=0.5), "--oversample_epochs=0"),
    (dict(phase1_epochs=0, phase2_epochs=0), "nothing to train"),
    (dict(backbone="resnet9000"), "--backbone=resnet9000: choose one of"),
    (dict(model_dir=""), "--model_dir is empty"),
    (dict(train_cache_gib=-1.0), "--train_cache_gib=-1.0: must be at least 0"),
    (dict(phase1_epochs=-1), "--phase1_epochs=-1: must be at least 0"),
    (dict(sampling_temperature=1.5), "--sampling_temperature=1.5: must be at most 1"),
    (dict(batch_size=0), "--batch_size=0: must be at least 1"),
])
def test_validate_names_the_flag(changes, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("+", r"\+")):
        validate(dataclasses.replace(Config(**TINY), **changes))


def test_train_cache_gib_becomes_the_pipeline_budget_in_bytes():
    assert inputs.input_config(dataclasses.replace(Config(**TINY), train_cache_gib=0.5)).train_cache_bytes == 1 << 29
    assert inputs.input_config(dataclasses.replace(Config(**TINY), train_cache_gib=0)).train_cache_bytes == 0


def test_streamed_macro_f1_is_the_metric_modules_definition():
    """The Keras metric that selects checkpoints equals trainer/numbers/metrics.py's macro-F1 (scikit-learn's:
    over the classes seen as truth or prediction), also when a class is predicted but absent from the truth."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, 300)  # classes 7..11 never occur as truth
    scores = rng.random((300, 12)).astype("float32")
    scores[np.arange(300), labels] += rng.random(300).astype("float32")
    scores[:5, 9] = 5.0  # class 9 is predicted five times but never true: it must count, as a zero F1
    predictions = scores.argmax(1)
    metric = objectives.MacroF1(12)
    for start in range(0, 300, 64):
        metric.update_state(labels[start:start + 64], scores[start:start + 64])
    expected = metrics.macro_f1(labels, predictions)
    assert expected == pytest.approx(f1_score(labels, predictions, average="macro"))
    assert expected < f1_score(labels, predictions, labels=np.unique(labels), average="macro")
    assert float(metric.result()) == pytest.approx(expected, abs=1e-6)
    one_hot = objectives.MacroF1(12)
    one_hot.update_state(np.eye(12)[labels], scores)
    assert float(one_hot.result()) == pytest.approx(expected, abs=1e-6)


def test_smoothed_crossentropy_takes_ids_and_one_hot_alike():
    loss = objectives.SmoothedCrossentropy(5, label_smoothing=0.1)
    scores = np.full((2, 5), 0.2, "float32")
    ids, one_hot = np.array([1, 3]), np.eye(5, dtype="float32")[[1, 3]]
    assert float(loss(ids, scores)) == pytest.approx(float(loss(one_hot, scores)))
    assert float(loss(ids, scores)) == pytest.approx(-np.log(0.2), rel=1e-5)


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    schedule = schedules.learning_rate(1e-3, steps_per_epoch=10, epochs=5, schedule="cosine", warmup_epochs=1,
                                       final_fraction=0.01)
    rates = [float(schedule(step)) for step in (0, 5, 10, 30, 50)]
    assert rates[0] == 0 and rates[1] == pytest.approx(5e-4) and rates[2] == pytest.approx(1e-3)
    assert rates[2] > rates[3] > rates[4] == pytest.approx(1e-5)
    assert schedules.learning_rate(1e-3, 10, 5, "constant", 1, 0.01) == 1e-3


def test_learning_rate_scaling_rules():
    assert distribute.scaled_learning_rate(1e-3, 128, "none", 32) == 1e-3
    assert distribute.scaled_learning_rate(1e-3, 128, "linear", 32) == pytest.approx(4e-3)
    assert distribute.scaled_learning_rate(1e-3, 128, "sqrt", 32) == pytest.approx(2e-3)


def _classifier(**changes) -> models.Classifier:
    config = dataclasses.replace(Config(**TINY), **changes)
    return models.build_classifier(config, [], {rank: len(labels.names(rank)) for rank in config.head_ranks})


def test_unfreezing_trains_the_last_layers_but_never_pretrained_batchnorm():
    classifier = _classifier()
    models.set_trainable_backbone(classifier, 0, keep_batchnorm_frozen=True)
    assert not classifier.backbone.trainable_weights and classifier.head.trainable_weights
    models.set_trainable_backbone(classifier, 20, keep_batchnorm_frozen=True)
    trainable = [layer for layer in classifier.backbone.layers if layer.trainable]
    assert trainable and all(index >= len(classifier.backbone.layers) - 20
                             for index, layer in enumerate(classifier.backbone.layers) if layer.trainable)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in trainable)
    models.set_trainable_backbone(classifier, -1, keep_batchnorm_frozen=False)
    assert all(layer.trainable for layer in classifier.backbone.layers)


def test_serving_model_scales_its_own_input_and_shares_the_head(tmp_path):
    classifier = _classifier(heads=("family", "phylum"), aux_loss_weight=0.3)
    raw = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    scaled = raw / 127.5 - 1.0  # MobileNetV2's scaling, as the datasets deliver it
    served, trained = classifier.serving(raw), classifier.model(scaled)
    assert set(served) == {"family", "phylum"} and served["family"].shape == (2, 202)
    np.testing.assert_allclose(served["family"], trained["family"], atol=1e-5)
    embeddings = classifier.embedder(scaled)
    np.testing.assert_allclose(classifier.head(embeddings)["family"], trained["family"], atol=1e-5)
    classifier.serving.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(reloaded(raw)["family"], served["family"], atol=1e-5)


def test_head_without_hidden_layer_is_a_linear_probe():
    head = _classifier(dense_units=0).head
    assert [layer.name for layer in head.layers] == ["embedding", "pool_dropout", "family"]
