"""The transfer recipe's flags (trainer/training/recipe.py, wise_ft.py): WiSE-FT's ends are the probe and the
fine-tuned model exactly, EMA survives a kill, logit adjustment against numpy, layer decay's per-group rates,
gradient accumulation against a larger batch (one device; refused over several replicas), EMA and layer decay
under MirroredStrategy, one line per bad value."""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pandas as pd
import pytest
from absl import flags

import pipelines  # registers the classes model.keras files written before 2026-12-06 name
from tests.conftest import once
from tests.training.test_distributed import HEAD_ONLY
from tests.training.test_distributed import trainer_main as distributed_main
from tests.training.test_end_to_end import tiny_config
from trainer.training import callbacks, objectives, recipe, schedules, train, wise_ft
from trainer.training import config as config_lib
from trainer.training.config import Config, ConfigError
from trainer.training.run_dir import RunFiles

REPO = pathlib.Path(__file__).parents[2]


# --- WiSE-FT -------------------------------------------------------------------------------------------------

def _run(data_dir, model_dir, **changes) -> dict:
    """A deterministic tiny run: the logit-adjusted loss too, so the recipe's flags run together."""
    recipe_run = {"phase2_epochs": 2, "deterministic": True, "loss": "logit_adjusted", "class_weights": "none"}
    return train.run(tiny_config(data_dir, model_dir, **{**recipe_run, **changes}))


@pytest.fixture(scope="module")
def wise_runs(tiny_data_dir, shared_dir):
    """Runs of the same seed: phase 1 alone, both phases without WiSE-FT, and --wise_ft at 0, 1 and auto; made
    once for every xdist worker (the tests touch different runs)."""
    def make(root: pathlib.Path) -> dict:
        runs = {"phase1": _run(tiny_data_dir, root / "phase1", phase2_epochs=0),
                "off": _run(tiny_data_dir, root / "off")}
        for alpha in ("0", "1", "auto"):
            runs[alpha] = _run(tiny_data_dir, root / alpha, wise_ft=alpha)
        return {"data_dir": tiny_data_dir, "runs": runs}

    made = once(shared_dir, "wise_runs", make)
    return made["data_dir"], shared_dir / "wise_runs", made["runs"]


def _validation_outputs(data_dir, model_dir: pathlib.Path) -> np.ndarray:
    config = tiny_config(data_dir, model_dir)
    raw = pipelines.InputConfig(data_dir=data_dir, dataset_config=config.dataset, backbone=config.backbone,
                                image_size=config.input_size, batch_size=16, augment_on_device=True)
    images = np.concatenate([batch for batch, _ in pipelines.make_dataset(raw, "validation", training=False)
                             .as_numpy_iterator()])
    return keras.saving.load_model(model_dir / "model.keras").predict(images, verbose=0)["family"]


@pytest.mark.slow
def test_wise_ft_0_and_1_reproduce_the_phase1_and_phase2_predictions_exactly(wise_runs):
    data_dir, root, runs = wise_runs
    outputs = {name: _validation_outputs(data_dir, root / name) for name in ("phase1", "off", "0", "1")}
    assert not np.array_equal(outputs["phase1"], outputs["off"])  # phase 2 changed the model
    assert np.array_equal(outputs["0"], outputs["phase1"])
    assert np.array_equal(outputs["1"], outputs["off"])
    assert runs["0"]["wise_ft"] == {"alpha": 0.0, "chosen": "--wise_ft"}
    assert runs["1"]["validation"] == runs["off"]["validation"]
    assert "wise_ft" not in runs["off"] and not (root / "off" / "wise_ft.json").exists()


@pytest.mark.slow
def test_wise_ft_auto_records_its_choice_and_a_rerun_does_not_average_again(wise_runs, capsys):
    data_dir, root, runs = wise_runs
    record = json.loads((root / "auto" / "wise_ft.json").read_text())
    scores = record["validation_macro_f1"]
    assert list(scores) == [str(alpha) for alpha in wise_ft.ALPHAS]
    assert scores[str(record["alpha"])] == max(scores.values()) == pytest.approx(
        runs["auto"]["validation"]["macro_f1"])
    assert runs["auto"]["wise_ft"] == record
    best = (root / "auto" / "checkpoints" / "best.weights.h5").read_bytes()
    capsys.readouterr()
    again = _run(data_dir, root / "auto", wise_ft="auto")
    assert "WiSE-FT" not in capsys.readouterr().out
    assert (root / "auto" / "checkpoints" / "best.weights.h5").read_bytes() == best
    assert again["validation"] == runs["auto"]["validation"]
    # Killed after the average replaced the best checkpoint but before the record: the rerun averages the kept
    # probe and fine-tuned files again, to the same model.
    before = _validation_outputs(data_dir, root / "auto")
    (root / "auto" / "wise_ft.json").unlink()
    _run(data_dir, root / "auto", wise_ft="auto")
    assert json.loads((root / "auto" / "wise_ft.json").read_text()) == record
    assert np.array_equal(_validation_outputs(data_dir, root / "auto"), before)


@pytest.mark.slow
def test_a_deleted_probe_is_one_line_not_a_traceback(wise_runs):
    data_dir, root, _ = wise_runs
    (root / "1" / "wise_ft.json").unlink()
    (root / "1" / "checkpoints" / "probe.weights.h5").unlink()
    with pytest.raises(ConfigError, match=r"^--wise_ft=1: the probe's weights .* are missing") as raised:
        _run(data_dir, root / "1", wise_ft="1")
    assert "\n" not in str(raised.value)


def test_wise_ft_mix_is_exact_at_its_ends_and_keeps_counters():
    probe = [np.float32([1.5, -2.25]), np.int64([7])]
    tuned = [np.float32([0.1, 3.3]), np.int64([9])]
    assert np.array_equal(wise_ft.mix(probe, tuned, 0.0)[0], probe[0])
    assert np.array_equal(wise_ft.mix(probe, tuned, 1.0)[0], tuned[0])
    half = wise_ft.mix(probe, tuned, 0.5)
    np.testing.assert_allclose(half[0], [0.8, 0.525], rtol=1e-6)
    assert half[0].dtype == np.float32 and half[1].tolist() == [9]


# --- EMA, layer decay and accumulation on a tiny Keras model ---------------------------------------------------

def _data(count: int = 48):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(count, 6)).astype("float32")
    return features, (features[:, 0] > 0).astype("int64") + (features[:, 1] > 0.5).astype("int64")


def _tiny(config: Config, rate=0.05) -> keras.Model:
    """Two 'backbone' Dense layers and a softmax head, compiled with the recipe's optimizer (no dropout or
    batch normalisation: the updates are the gradients' alone)."""
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                                 keras.layers.Dense(8, activation="relu")], name="backbone")
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="head")(backbone(inputs)))
    model.compile(recipe.optimizer(config, rate, model, backbone), "sparse_categorical_crossentropy",
                  metrics=[objectives.MacroF1(3)])
    model.backbone = backbone
    return model


class _Trajectory(keras.callbacks.Callback):
    """Records the raw weights after every batch (first callback: before any swap) and what the model holds at
    each epoch's end after every other callback (last callback: what validation and the checkpoints saw)."""

    def __init__(self, last: bool):
        super().__init__()
        self.last, self.batches, self.epochs = last, [], []

    def on_train_batch_end(self, batch, logs=None):
        if not self.last:
            self.batches.append(self.model.get_weights())

    def on_epoch_end(self, epoch, logs=None):
        if self.last:
            self.epochs.append(self.model.get_weights())


class _KillAt(keras.callbacks.Callback):
    def __init__(self, epoch: int, batch: int):
        super().__init__()
        self.at = (epoch, batch)
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise KeyboardInterrupt


def _fit(config: Config, model_dir: pathlib.Path, epochs: int = 4, kill=None):
    """fit with the phase's real callbacks (train.py's order), between two recorders; returns the recorders."""
    model = _tiny(config)
    first, last = _Trajectory(last=False), _Trajectory(last=True)
    rules = callbacks.PhaseRules("phase2", "val_macro_f1", checkpoint=True, constant_rate=False, patience=100,
                                 plateau_patience=2, best_so_far=None, first_step=0, epochs=epochs, progress="none",
                                 ema=config.ema)
    phase = callbacks.phase_callbacks(RunFiles(model_dir), rules, callbacks.RunHooks(restart=lambda: None))
    features, labels = _data()
    model.fit(features, labels, validation_data=(features[:16], labels[:16]), epochs=epochs, batch_size=8,
              shuffle=False, verbose=0, callbacks=[first, *phase, last, *([kill] if kill else [])])
    return model, first, last


def _moving_average(trajectory: list[list[np.ndarray]], momentum: float) -> list[list[np.ndarray]]:
    """Keras' average after every update: the first update's weights, then m * average + (1 - m) * weights."""
    averages, average = [], None
    for weights in trajectory:
        average = weights if average is None else [momentum * a + (1 - momentum) * w
                                                   for a, w in zip(average, weights)]
        averages.append(average)
    return averages


def test_ema_is_what_validation_and_the_best_checkpoint_see(tmp_path):
    config = Config(ema=True, ema_momentum=0.8)
    _, first, last = _fit(config, tmp_path)
    averages = _moving_average(first.batches, 0.8)
    steps = len(first.batches) // len(last.epochs)
    for epoch, held in enumerate(last.epochs):
        for got, want in zip(held, averages[(epoch + 1) * steps - 1]):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(last.epochs[-1][0], first.batches[-1][0])  # the average is not the raw weights
    checkpoint = _tiny(config)
    checkpoint.load_weights(tmp_path / "checkpoints" / "best.weights.h5", objects_to_skip=[checkpoint.optimizer])
    assert any(all(np.array_equal(a, b) for a, b in zip(checkpoint.get_weights(), held)) for held in last.epochs)


@pytest.mark.parametrize("cached", [True, False], ids=["cached_phase1", "images"])
def test_the_saved_model_is_the_average_validation_chose(tiny_data_dir, tmp_path, cached):
    """With --ema the checkpoint finish() evaluates is the average the best epoch's validation saw: its
    validation macro-F1 is the logged best (also when phase 1 fits the head alone on cached embeddings)."""
    results = train.run(tiny_config(tiny_data_dir, tmp_path, phase1_epochs=3, phase2_epochs=0, ema=True,
                                    ema_momentum=0.7, phase1_cached_features=cached, pool_dropout=0.0,
                                    dense_dropout=0.0))
    assert results["validation"]["macro_f1"] == pytest.approx(results["best_val_macro_f1"], abs=1e-6)


@pytest.mark.parametrize("changes", [{"ema": True, "ema_momentum": 0.8},
                                     {"ema": True, "ema_momentum": 0.8, "layer_decay": 0.5,
                                      "gradient_accumulation_steps": 2}], ids=["ema", "ema_decay_accumulation"])
def test_a_kill_mid_epoch_and_a_resume_continue_the_same_average(tmp_path, changes):
    """Killed in the middle of epoch 3, rerun: the resumed epochs end with the uninterrupted run's averages (the
    raw weights, the average and every optimizer state came back from the backup)."""
    config = Config(**changes)
    _, _, whole = _fit(config, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        _fit(config, tmp_path / "killed", kill=_KillAt(epoch=2, batch=2))
    assert (tmp_path / "killed" / "backup" / "phase2").exists()
    _, _, resumed = _fit(config, tmp_path / "killed")
    assert len(resumed.epochs) == 2  # epochs 3 and 4 only
    assert not np.allclose(whole.epochs[1][0], whole.epochs[2][0])  # epoch 3 moved the average
    for resumed_epoch, whole_epoch in zip(resumed.epochs, whole.epochs[2:]):
        for got, want in zip(resumed_epoch, whole_epoch):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_layer_decay_gives_each_depth_its_rate():
    """Adam's first step moves each weight by about its rate (scale-free: a gradient scaling could not do
    this): the head at the peak, the backbone's last layer at decay, its first at decay ** 2."""
    model = _tiny(Config(layer_decay=0.5), rate=0.01)
    before = model.get_weights()
    features, labels = _data()
    model.train_on_batch(features, labels)
    moved = [np.abs(after - start) for after, start in zip(model.get_weights(), before)]
    depth = recipe.backbone_depths(model.backbone)
    assert sorted(set(depth.values())) == [1, 2]
    rates = {variable.path: 0.01 * 0.5 ** depth.get(variable.path, 0) for variable in model.trainable_variables}
    for variable, step in zip(model.trainable_variables, moved):
        big = step > 1e-4 * rates[variable.path]  # weights with a gradient
        np.testing.assert_allclose(step[big], rates[variable.path], rtol=5e-2)  # Adam's epsilon: 2x apart
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01)  # the head's, what the console shows


def test_a_scaled_schedule_is_the_schedule_times_the_factor():
    schedule = schedules.learning_rate(1e-3, 10, 3, "cosine", 1, 0.01)
    scaled = schedules.scaled(schedule, 0.25)
    for step in (0, 5, 10, 17, 29):
        assert float(scaled(step)) == pytest.approx(0.25 * float(schedule(step)), rel=1e-6)
    assert schedules.scaled(2e-3, 0.5) == pytest.approx(1e-3) and schedules.scaled(schedule, 1) is schedule


def test_gradient_accumulation_equals_a_larger_batch():
    features, labels = _data()
    results = []
    for steps, batch in ((1, 16), (2, 8), (4, 4)):
        model = _tiny(Config(gradient_accumulation_steps=steps), rate=0.01)
        model.fit(features, labels, epochs=2, batch_size=batch, shuffle=False, verbose=0)
        results.append(model.get_weights())
        assert int(model.optimizer.iterations) == 2 * len(features) // 16  # updates, not batches
    for other in results[1:]:
        for got, want in zip(other, results[0]):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_the_schedule_spans_the_phase_in_batches_whatever_the_accumulation():
    """7 batches an epoch, updates every 3: the schedule (built over the phase's batches) ends at its final rate
    on the last batch; the leftover batch's gradient waits for the next epoch's first update."""
    schedule = schedules.learning_rate(1e-2, 7, 2, "cosine", 0.5, 0.01)
    model = _tiny(Config(gradient_accumulation_steps=3), rate=schedule)
    features, labels = _data(56)
    model.fit(features, labels, epochs=2, batch_size=8, shuffle=False, verbose=0)
    assert int(model.optimizer.iterations) == 14 // 3
    assert float(model.optimizer.learning_rate) == pytest.approx(float(schedule(14)), rel=1e-6)
    assert float(schedule(14)) == pytest.approx(1e-4, rel=1e-6)


# --- logit adjustment ------------------------------------------------------------------------------------------

def test_the_logit_adjusted_loss_is_menons_on_the_softmax_outputs():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(5, 4))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([0, 3, 1, 1, 2])
    counts = np.array([50, 5, 0, 20])
    tau, smoothing = 1.5, 0.1
    adjusted = logits + tau * np.log(np.maximum(counts, 1) / np.maximum(counts, 1).sum())
    log_softmax = adjusted - np.log(np.exp(adjusted).sum(axis=1, keepdims=True))
    targets = np.eye(4)[labels] * (1 - smoothing) + smoothing / 4
    expected = -(targets * log_softmax).sum(axis=1).mean()
    loss = objectives.LogitAdjustedCrossentropy(4, tau * recipe.log_priors(counts), label_smoothing=smoothing)
    assert float(loss(labels, probabilities.astype("float32"))) == pytest.approx(expected, rel=1e-5)
    assert np.isfinite(recipe.log_priors(counts)).all()
    plain = objectives.SmoothedCrossentropy(4, label_smoothing=smoothing)
    assert float(objectives.LogitAdjustedCrossentropy(4, np.zeros(4), label_smoothing=smoothing)(
        labels, probabilities.astype("float32"))) == pytest.approx(float(plain(labels, probabilities)), rel=1e-5)


def test_compile_arguments_adjust_every_head_with_its_own_priors():
    arguments = objectives.compile_arguments("family", 0.5, 0.0, {"order": 2, "family": 3}, False,
                                             adjustments={"order": np.zeros(2), "family": np.log([0.5, 0.3, 0.2])})
    losses = arguments["loss"]
    assert all(isinstance(loss, objectives.LogitAdjustedCrossentropy) for loss in losses.values())
    np.testing.assert_allclose(losses["family"].adjustments, np.log([0.5, 0.3, 0.2]), rtol=1e-6)


# --- MirroredStrategy on two logical CPUs ----------------------------------------------------------------------

MIRRORED = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    from trainer.training import distribute
    distribute.split_cpu(2)
    import keras
    from tests.training import test_recipe as t
    from trainer.training.config import Config
    features, labels = t._data()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    runs = {}
    for name, decay in (("one_rate", 1.0), ("layer_decay", 0.5)):
        with strategy.scope():
            model = t._tiny(Config(ema=True, ema_momentum=0.8, layer_decay=decay), rate=0.01)
        first = t._Trajectory(last=False)
        model.fit(features, labels, epochs=2, batch_size=8, shuffle=False, verbose=0,
                  callbacks=[first, keras.callbacks.SwapEMAWeights(swap_on_epoch=True)])
        runs[name] = {"weights": [w.tolist() for w in model.get_weights()],
                      "average": [w.tolist() for w in t._moving_average(first.batches, 0.8)[-1]],
                      "first_step": [w.tolist() for w in first.batches[0]],
                      "replicas": strategy.num_replicas_in_sync}
    json.dump(runs, sys.stdout)
""")


@pytest.mark.slow
def test_ema_with_layer_decay_under_mirrored_strategy():
    """Two replicas, with and without --layer_decay (Keras' MultiOptimizer): the model ends holding the moving
    average of the weights it trained, and layer decay changed the backbone's steps."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", "TF_ENABLE_ONEDNN_OPTS": "0"}
    done = subprocess.run([sys.executable, "-c", MIRRORED], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = json.loads(done.stdout.strip().splitlines()[-1])
    assert {run["replicas"] for run in runs.values()} == {2}
    for run in runs.values():
        for got, want in zip(run["weights"], run["average"]):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    start = _tiny(Config()).get_weights()
    first_steps = {name: [np.abs(np.subtract(after, before)).max() for after, before in
                          zip(run["first_step"], start)] for name, run in runs.items()}
    # Adam's first step is about the rate: the backbone's first kernel moves at decay ** 2 of the peak.
    assert first_steps["layer_decay"][0] == pytest.approx(0.25 * first_steps["one_rate"][0], rel=0.05)
    assert first_steps["layer_decay"][-1] == pytest.approx(first_steps["one_rate"][-1], rel=0.05)


@pytest.mark.slow
def test_ema_under_mirrored_matches_one_device(tiny_data_dir, tmp_path):
    """trainer.main --ema on two logical CPUs logs what one device logs at the same global batch."""
    ema = [*HEAD_ONLY, "--ema", "--ema_momentum=0.9", "--nophase1_cached_features", f"--data_dir={tiny_data_dir}"]
    distributed_main(*ema, f"--model_dir={tmp_path / 'one'}", "--strategy=one_device", "--batch_size=4")
    distributed_main(*ema, f"--model_dir={tmp_path / 'two'}", "--strategy=mirrored", "--cpu_devices=2",
                     "--batch_size=2")
    logs = [pd.read_csv(tmp_path / name / "logs" / "phase1.csv") for name in ("one", "two")]
    np.testing.assert_allclose(logs[1]["val_loss"], logs[0]["val_loss"], rtol=1e-4)
    plain = [*HEAD_ONLY, "--nophase1_cached_features", f"--data_dir={tiny_data_dir}", "--strategy=one_device",
             "--batch_size=4"]
    distributed_main(*plain, f"--model_dir={tmp_path / 'plain'}")
    assert not np.allclose(pd.read_csv(tmp_path / "plain" / "logs" / "phase1.csv")["val_loss"], logs[0]["val_loss"])


# --- one line per mistake --------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--wise_ft=banana"], "--wise_ft=banana: not off, auto or a number from 0 to 1"),
    (["--wise_ft=1.5"], "--wise_ft=1.5: not off, auto or a number from 0 to 1"),
    (["--wise_ft=nan"], "--wise_ft=nan: not off, auto or a number from 0 to 1"),
    (["--wise_ft=auto", "--phase2_epochs=0"], "--wise_ft=auto averages the phase-1 and fine-tuned weights but"),
    (["--loss=logit_adjusted"], "add --class_weights=none --sampling_temperature=1"),
    (["--loss=logit_adjusted", "--class_weights=none", "--sampling_temperature=0.5", "--nophase1_cached_features"],
     "--sampling_temperature=0.5 would correct it again"),
    (["--loss=focal"], "flag --loss=focal: value should be one of <cross_entropy|logit_adjusted>"),
    (["--layer_decay=0"], "--layer_decay=0.0 gives the backbone no learning rate"),
    (["--layer_decay=1.5"], "--layer_decay"),
    (["--gradient_accumulation_steps=0"], "--gradient_accumulation_steps"),
    (["--ema_momentum=1.5"], "--ema_momentum"),
    (["--logit_adjustment_tau=-1"], "--logit_adjustment_tau"),
], ids=["wise_word", "wise_above_1", "wise_nan", "wise_one_phase", "la_with_weights", "la_with_sampling",
        "unknown_loss", "decay_0", "decay_above_1", "accumulation_0", "ema_above_1", "tau_negative"])
def test_each_bad_recipe_value_is_refused_in_one_line(args, message, tmp_path):
    """What trainer.main does with these flags, in this process: the flag parser's refusal (absl's flags.Error)
    or the config's ConfigError, either of which cli.run prints as its one line (the next test runs the
    command itself)."""
    argv = ["--flagfile=configs/demo.flags", f"--model_dir={tmp_path / 'run'}", *args]
    with pytest.raises((flags.Error, ConfigError)) as refused:
        config_lib.validate(config_lib.parse([arg.replace("configs/", f"{REPO}/configs/") for arg in argv]))
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert not (tmp_path / "run").exists()


def test_accumulation_over_replicas_is_one_line_from_the_command(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-m", "trainer.main", "--flagfile=configs/demo.flags",
                           f"--model_dir={tmp_path / 'run'}", "--gradient_accumulation_steps=2",
                           "--strategy=mirrored", "--cpu_devices=2"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    errors = [line for line in done.stderr.splitlines() if line.startswith("trainer.main: error:")]
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(errors) == 1 and "--gradient_accumulation_steps=2 with 2 replicas: Keras cannot accumulate" in \
        errors[0], errors
    assert "Traceback" not in done.stderr and not (tmp_path / "run").exists()


def test_the_defaults_leave_the_recipe_off():
    config = Config()
    assert (config.loss, config.ema, config.wise_ft, config.layer_decay, config.gradient_accumulation_steps) == (
        "cross_entropy", False, "off", 1.0, 1)
    assert dataclasses.replace(config, ema=True).ema_momentum == 0.99
