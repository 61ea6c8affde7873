"""The keras-hub transformers (DINOv2, SigLIP 2) and the newer keras.applications CNNs (EfficientNetV2,
ConvNeXt) through the whole path at tiny sizes with random weights: training with the feature cache, both
phases, evaluation with few-shot, the SavedModel and LiteRT exports, MirroredStrategy on two logical CPUs with
mixed precision; a keras-hub preset directory through --weights=PATH; and the flag checks that guard them."""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from pipelines import backbones, features
from trainer.evaluation import evaluate
from trainer.serving import export
from trainer.training import models, recipe, train
from trainer.training.config import Config, ConfigError, validate

# One row per keras-hub family, at its smallest side (a whole number of 14 or 16 px patches). The new
# keras.applications rows take the CNN path every other row takes (test_new_applications_build_and_pool).
FAMILIES = {"dinov2_small": 28, "siglip2_base": 32}
# The transformers' path does not depend on their width or depth: end-to-end tests build them 2 blocks deep and
# 32 wide (seconds, not minutes, to train and export); the rows' own hyperparameters have the tests below.
SHRUNK = {"num_layers": 2, "hidden_dim": 32, "num_heads": 2, "intermediate_dim": 64}
SHRINK_AND_TRAIN = f"""
import dataclasses, sys
from pipelines import backbones
row = backbones.BACKBONES[sys.argv.pop(1)]
backbones.BACKBONES[row.name] = dataclasses.replace(row, hub=dataclasses.replace(row.hub, **{SHRUNK!r}))
from trainer import cli, main
cli.run(main.PROGRAM, main.main, main.Config)
"""


# model.keras opened by plain Keras in a fresh process, away from this project (Keras imports keras-hub itself).
PLAIN_LOAD = """
import sys, keras, numpy
model = keras.saving.load_model(sys.argv[1])
print(model.predict(numpy.zeros((1, *model.input_shape[1:])), verbose=0)["family"].shape)
"""


@pytest.fixture
def shrunk(monkeypatch):
    for name in FAMILIES:
        row = backbones.BACKBONES[name]
        if row.hub:
            monkeypatch.setitem(backbones.BACKBONES, name, dataclasses.replace(
                row, hub=dataclasses.replace(row.hub, **SHRUNK)))


def tiny_config(data_dir: str, model_dir, backbone: str, **changes) -> Config:
    """Two steps an epoch: a cached phase 1, then a phase 2 through the last two backbone units."""
    base = Config(data_dir=data_dir, dataset_config="small_128", model_dir=str(model_dir), backbone=backbone,
                  weights="none", image_size=backbones.get_backbone(backbone).min_input_size, dense_units=0,
                  batch_size=8, phase1_epochs=1, phase1_cached_features=True, phase2_epochs=1, unfreeze_layers=2,
                  warmup_epochs=0, class_weights="none", steps_per_epoch=2)
    return dataclasses.replace(base, **changes)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", FAMILIES)
def test_family_trains_caches_evaluates_and_exports(tiny_data_dir, tmp_path, shrunk, backbone):
    model_dir = tmp_path / "run"
    train.run(tiny_config(tiny_data_dir, model_dir, backbone))
    assert len(list((model_dir / "features").glob("*.npz"))) == 2, "phase 1 embeds train and validation once"
    plain = subprocess.run([sys.executable, "-c", PLAIN_LOAD, str(model_dir / "model.keras")], capture_output=True,
                           text=True, check=False, cwd=tmp_path)
    assert plain.stdout.strip().endswith("(1, 202)"), plain.stderr[-2000:]
    model = keras.saving.load_model(model_dir / "model.keras")
    size = FAMILIES[backbone]
    pixels = np.random.default_rng(0).uniform(0, 255, (3, size, size, 3)).astype(np.float32)
    np.testing.assert_allclose(model.predict(pixels, verbose=0)["family"].sum(axis=1), 1.0, atol=1e-4)
    report = evaluate.evaluate(evaluate.EvaluationConfig(str(model_dir), split="test", resamples=10,
                                                         few_shot=("1",), few_shot_split="test"))
    assert report.metrics["examples"] == 8 and report.metrics["few_shot"]["1_shot"]["labels"] > 1
    assert (export.export(export.ExportSettings(str(model_dir))) / "saved_model.pb").exists()
    written = export.export(export.ExportSettings(str(model_dir), format="litert", quantize="float32"))
    assert written.name == "float32.tflite" and written.stat().st_size > 0


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["dinov2_small", "siglip2_base"])
def test_transformer_under_mirrored_on_two_cpus_with_mixed_precision(tiny_data_dir, tmp_path, backbone):
    """A subprocess: the two logical CPUs must be set before TensorFlow starts."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-c", SHRINK_AND_TRAIN, backbone, f"--backbone={backbone}", "--weights=none",
         f"--image_size={FAMILIES[backbone]}", "--dataset_config=small_128", f"--data_dir={tiny_data_dir}",
         f"--model_dir={tmp_path}", "--strategy=mirrored", "--cpu_devices=2", "--batch_size=4",
         "--steps_per_epoch=2", "--phase1_epochs=1", "--phase1_cached_features", "--phase2_epochs=1",
         "--unfreeze_layers=2", "--warmup_epochs=0", "--dense_units=0", "--class_weights=none",
         "--mixed_precision=mixed_bfloat16"],
        capture_output=True, text=True, env=env, timeout=600, check=False, cwd=pathlib.Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["replicas"] == 2 and written["test"]


@pytest.mark.parametrize("backbone", ["efficientnetv2b0", "convnextsmall"])
def test_new_applications_build_and_pool(backbone):
    spec = backbones.get_backbone(backbone)
    embedder = models.build_embedder(spec, models.build_backbone(spec, 32, "none"), 32)
    assert embedder(np.zeros((1, 32, 32, 3), np.float32)).shape == (1, {"efficientnetv2b0": 1280,
                                                                         "convnextsmall": 768}[backbone])


def published_dinov2_small_params(size: int) -> int:
    """keras-hub's published dinov2_small count (presets' metadata) is at 518 px, where the interpolated
    position table holds 37 * 37 + 1 rows; at `size` it holds (size / 14) ** 2 + 1."""
    return 22_582_656 - (37 * 37 - (size // 14) ** 2) * 384


def test_dinov2_row_builds_the_published_architecture():
    spec = backbones.get_backbone("dinov2_small")
    backbone = models.build_backbone(spec, 28, "none")
    assert backbone.count_params() == published_dinov2_small_params(28)


def test_dinov2_embedding_is_the_class_token_and_the_mean_of_the_patch_tokens():
    spec = backbones.get_backbone("dinov2_small")
    backbone = models.build_backbone(spec, 42, "none")
    pixels = np.random.default_rng(1).normal(size=(2, 42, 42, 3)).astype(np.float32)
    tokens = np.asarray(backbone({"images": pixels}))
    assert tokens.shape == (2, 1 + 9, 384)
    expected = np.concatenate([tokens[:, 0], tokens[:, 1:].mean(axis=1)], axis=1)
    got = np.asarray(models.build_embedder(spec, backbone, 42)(pixels))
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_siglip_embedding_is_its_attention_pooled_output():
    spec = backbones.get_backbone("siglip2_base")
    backbone = models.build_backbone(spec, 32, "none")
    pixels = np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(models.build_embedder(spec, backbone, 32)(pixels)),
                               np.asarray(backbone({"images": pixels})), atol=1e-5)


def test_unfreeze_counts_dinov2_blocks_one_by_one():
    """keras-hub keeps DINOv2's 12 blocks inside one encoder layer; --unfreeze_layers=3 must train the last two
    blocks and the final LayerNorm, not the whole encoder."""
    spec = backbones.get_backbone("dinov2_small")
    backbone = models.build_backbone(spec, 28, "none")
    classifier = models.Classifier(None, None, None, keras.Sequential([keras.Input((1,))]), None, backbone)
    models.set_trainable_backbone(classifier, 3, keep_batchnorm_frozen=True)
    blocks = backbone.get_layer("encoder").layers
    assert [block.trainable for block in blocks] == [False] * 10 + [True] * 2
    assert backbone.get_layer("layernorm").trainable and not backbone.get_layer("embeddings").trainable
    trainable = {variable.path for variable in backbone.trainable_variables}
    assert trainable and all("layers_10" in path or "layers_11" in path or "layernorm" in path
                             for path in trainable)


def test_layer_decay_counts_dinov2_blocks_one_by_one(shrunk):
    """--layer_decay gives each transformer block its own depth (as --unfreeze_layers counts them), not one depth
    to the encoder that holds them all."""
    backbone = models.build_backbone(backbones.get_backbone("dinov2_small"), 28, "none")
    depth = recipe.backbone_depths(backbone)
    blocks = backbone.get_layer("encoder").layers
    block_depths = [{depth[variable.path] for variable in block.weights} for block in blocks]
    assert all(len(depths) == 1 for depths in block_depths)
    assert [depths.pop() for depths in block_depths] == [3, 2]  # the final LayerNorm is 1
    assert {depth[variable.path] for variable in backbone.get_layer("layernorm").weights} == {1}


def save_preset(backbone: str, size: int, directory: pathlib.Path) -> keras.Model:
    """A keras-hub preset directory of the row's architecture with random weights, as save_to_preset writes it
    on a machine with internet (no download here)."""
    built = models.build_backbone(backbones.get_backbone(backbone), size, "none")
    built.save_to_preset(str(directory))
    return built


@pytest.mark.parametrize("backbone", ["dinov2_small", "siglip2_base"])
def test_preset_directory_loads_through_weights_path(tmp_path, shrunk, backbone):
    size = FAMILIES[backbone]
    saved = save_preset(backbone, size, tmp_path / "preset")
    spec = backbones.get_backbone(backbone)
    assert backbones.weights_problem(spec, str(tmp_path / "preset")) is None
    loaded = models.build_backbone(spec, size, str(tmp_path / "preset"))
    pixels = np.random.default_rng(4).normal(size=(2, size, size, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(loaded({"images": pixels})), np.asarray(saved({"images": pixels})),
                               atol=1e-5)


def test_dinov2_preset_directory_loads_at_another_size(tmp_path, shrunk):
    """DINOv2 interpolates its position table: a preset saved at 28 px feeds a 42 px run."""
    save_preset("dinov2_small", 28, tmp_path / "preset")
    loaded = models.build_backbone(backbones.get_backbone("dinov2_small"), 42, str(tmp_path / "preset"))
    assert loaded.output_shape == (None, 10, SHRUNK["hidden_dim"])


def test_preset_of_another_size_is_one_line_naming_the_backbone(tiny_data_dir, tmp_path, shrunk):
    save_preset("dinov2_small", 28, tmp_path / "preset")
    config = tiny_config(tiny_data_dir, tmp_path / "run", "dinov2_base", weights=str(tmp_path / "preset"))
    with pytest.raises(ConfigError, match=r"preset holds a DINOV2Backbone .* not dinov2_base .* pass the "
                                          r"--backbone of that preset") as refused:
        train.run(config)
    assert "\n" not in str(refused.value)


def test_preset_directory_identity_is_its_config_and_weights(tmp_path, shrunk):
    save_preset("dinov2_small", 28, tmp_path / "preset")
    first = features.weights_id(str(tmp_path / "preset"), 0)
    (tmp_path / "preset" / "metadata.json").write_text("{}")
    assert features.weights_id(str(tmp_path / "preset"), 0) == first
    with open(tmp_path / "preset" / "model.weights.h5", "ab") as weights:
        weights.write(b"\0")
    assert features.weights_id(str(tmp_path / "preset"), 0) != first
    weights_file = tmp_path / "a.weights.h5"
    weights_file.write_bytes(b"abc")
    assert features.weights_digest(str(weights_file)) == \
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.mark.parametrize(("changes", "message"), [
    ({"backbone": "dinov2_small", "weights": "imagenet"}, "not ImageNet-trained; use --weights=pretrained"),
    ({"backbone": "baseline_cnn", "weights": "pretrained", "image_size": 32}, "has no pretrained weights"),
    ({"backbone": "convnextsmall", "drop_path": 0.1}, "convnextsmall has no stochastic depth"),
    ({"backbone": "dinov2_small", "drop_path": 0.1}, "keras-hub 0.32's DINOv2 drop-path layer cannot train"),
    ({"backbone": "siglip2_base", "drop_path": 0.1}, "siglip2_base has no stochastic depth"),
    ({"backbone": "dinov2_small", "image_size": 30}, "patch size 14: use e.g. --image_size=28"),
    ({"backbone": "dinov2_small", "image_size": 14}, "below dinov2_small's minimum 28"),
    ({"backbone": "siglip2_base", "weights": "pretrained", "image_size": 32}, "learned for 224 px"),
    ({"backbone": "convnextsmall", "weights": "{dir}"}, "is a directory: convnextsmall takes a .weights.h5"),
    ({"backbone": "dinov2_small", "weights": "{dir}"}, "no config.json in the directory"),
    ({"backbone": "dinov2_small", "weights": "{dir}/missing"}, "no such file or directory; give a keras-hub"),
])
def test_flag_mistakes_are_one_line(tmp_path, changes, message):
    changes = {key: value.format(dir=tmp_path) if isinstance(value, str) else value
               for key, value in changes.items()}
    with pytest.raises(ConfigError, match=message) as refused:
        validate(tiny_config(str(tmp_path), tmp_path / "run", **changes))
    assert "\n" not in str(refused.value)


def test_pretrained_is_the_imagenet_alias_for_applications():
    for weights in ("pretrained", "imagenet"):
        assert backbones.weights_problem(backbones.get_backbone("efficientnetv2b0"), weights) is None
    assert backbones.weights_problem(backbones.get_backbone("dinov2_small"), "pretrained") is None


def test_keras_hub_dinov2_drop_path_still_cannot_train():
    """Why --drop_path is refused. When this fails, keras-hub has fixed its layer: pass drop_path_rate in
    models._hub_backbone and relax backbones.drop_path_problem."""
    import keras_hub

    backbone = keras_hub.models.DINOV2Backbone(patch_size=14, num_layers=1, hidden_dim=8, num_heads=2,
                                               intermediate_dim=16, drop_path_rate=0.5, image_shape=(28, 28, 3))
    with pytest.raises(ValueError, match="unsupported type"):
        backbone({"images": np.zeros((2, 28, 28, 3), np.float32)}, training=True)


def test_register_tokens_are_left_out_of_the_patch_mean(tmp_path, shrunk):
    """A dinov2_with_registers_* preset has dinov2's shape plus register tokens after the class token: the
    embedding must average the patch tokens only."""
    import keras_hub

    spec = backbones.get_backbone("dinov2_small")
    arch = spec.hub
    keras_hub.models.DINOV2Backbone(patch_size=14, num_layers=arch.num_layers, hidden_dim=arch.hidden_dim,
                                    num_heads=arch.num_heads, intermediate_dim=arch.intermediate_dim,
                                    num_register_tokens=4, image_shape=(28, 28, 3)).save_to_preset(str(tmp_path))
    backbone = models.build_backbone(spec, 28, str(tmp_path))
    pixels = np.random.default_rng(5).normal(size=(2, 28, 28, 3)).astype(np.float32)
    tokens = np.asarray(backbone({"images": pixels}))
    assert tokens.shape[1] == 1 + 4 + 4
    expected = np.concatenate([tokens[:, 0], tokens[:, 5:].mean(axis=1)], axis=1)
    np.testing.assert_allclose(np.asarray(models.build_embedder(spec, backbone, 28)(pixels)), expected, atol=1e-5)


def test_few_shot_of_a_backbone_refuses_unusable_weights_in_one_line(tmp_path):
    with pytest.raises(evaluate.EvaluationError, match="not ImageNet-trained"):
        evaluate.evaluate(evaluate.EvaluationConfig(few_shot=("1",), backbone="dinov2_small", weights="imagenet",
                                                    data_dir=str(tmp_path)))


@pytest.mark.slow
def test_audit_embeds_with_a_transformer(tiny_data_dir, tmp_path, shrunk):
    from trainer import cli
    from trainer.auditing import run, settings

    config = cli.parse([f"--data_dir={tiny_data_dir}", "--config=small_128", f"--out={tmp_path}",
                        "--backbone=dinov2_small", "--weights=none"], settings.AuditConfig, program="trainer.audit")
    scores = run.run(config)
    assert len(scores) == 80
    cached = np.load(next((tmp_path / "features").glob("*.npz")))
    assert cached["embeddings"].shape[1] == 2 * SHRUNK["hidden_dim"]


def test_a_variant_the_converter_refuses_is_one_line(monkeypatch):
    from trainer.serving import litert_export

    class Refusing:
        def convert(self):
            raise ValueError("Some ops are not supported by the native TFLite runtime\n  tf.Einsum {...}")

    monkeypatch.setattr(litert_export, "_converter", lambda *args: Refusing())
    with pytest.raises(litert_export.ConversionError, match=r"cannot convert the model to --quantize=int8 \(Some "
                                                            r"ops .* tf.Einsum") as refused:
        litert_export.convert_saved_model("unused", "int8")
    assert "\n" not in str(refused.value)
