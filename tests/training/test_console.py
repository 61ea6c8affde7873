"""What a run shows: the start header, one plain line per epoch in a file, the resume line, Keras' bar on a
terminal finished before the checkpoint's line, and the TensorBoard record read back with TensorBoard's own
reader (one step axis across phases, the flags as hparams, the images)."""

import dataclasses
import pathlib
import re
import subprocess
import sys

import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from tests.conftest import once, user_env
from tests.training.test_end_to_end import tiny_config
from trainer.training import console, train
from trainer.training.config import Config

REPO = pathlib.Path(__file__).resolve().parents[2]
EPOCH_LINE = re.compile(r"^(phase\d) epoch (\d+)/(\d+) \(run epoch (\d+)\)  loss ")


@pytest.fixture(scope="module")
def logged_run(tiny_data_dir, shared_dir):
    """trainer.main with its output in files, as a batch job runs it: 1 + 2 epochs; run once for every xdist
    worker."""
    once(shared_dir, "logged_run", lambda folder: train_logged(tiny_data_dir, folder))
    folder = shared_dir / "logged_run"
    return folder / "run", (folder / "out.txt").read_bytes(), (folder / "err.txt").read_bytes()


def train_logged(tiny_data_dir: str, folder: pathlib.Path) -> str:
    model_dir = folder / "run"
    folder.mkdir(parents=True, exist_ok=True)
    out, err = folder / "out.txt", folder / "err.txt"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        done = subprocess.run(
            [sys.executable, "-m", "trainer.main", f"--data_dir={tiny_data_dir}", f"--model_dir={model_dir}",
             "--dataset_config=small_128", "--backbone=baseline_cnn", "--image_size=32", "--weights=none",
             "--batch_size=8", "--steps_per_epoch=3", "--phase1_epochs=1", "--phase2_epochs=2",
             "--phase2_learning_rate=0.003", "--unfreeze_layers=-1", "--warmup_epochs=0", "--augment=light"],
            cwd=REPO, env=user_env(), stdout=stdout, stderr=stderr, timeout=600)
    assert done.returncode == 0, err.read_text()[-3000:]
    return str(model_dir)


def test_a_run_logged_to_a_file_shows_its_header_and_one_plain_line_per_epoch(logged_run):
    model_dir, out, err = logged_run
    assert b"\x1b" not in out + err and b"\r" not in out + err
    lines = out.decode().splitlines()
    epochs = [EPOCH_LINE.match(line).groups() for line in lines if EPOCH_LINE.match(line)]
    assert epochs == [("phase1", "1", "1", "1"), ("phase2", "1", "2", "2"), ("phase2", "2", "2", "3")]
    header = "\n".join(lines[:lines.index(next(line for line in lines if EPOCH_LINE.match(line)))])
    for expected in ("dataset    rare_species/small_128/", "splits     train 64, validation 8, test 8",
                     "labels     family: ", "model      baseline_cnn at 32 px, weights none",
                     "devices    OneDeviceStrategy, 1 replica on ", "batch      8 global (8 per replica), 3 steps",
                     "phase1     1 epoch at peak learning rate 0.0010, the head alone",
                     "phase2     2 epochs at peak learning rate 0.0030, the head and all backbone layers",
                     f"model_dir  {model_dir}"):
        assert expected in header
    assert lines[-1] == f"model: {model_dir / 'model.keras'}" and any(line.startswith("final test") for line in lines)


def scalars(directory: pathlib.Path) -> dict[str, list[int]]:
    """tag -> the steps TensorBoard's reader finds for it in one run folder."""
    accumulator = event_accumulator.EventAccumulator(str(directory), size_guidance={"tensors": 0})
    accumulator.Reload()
    return {tag: [event.step for event in accumulator.Tensors(tag)] for tag in accumulator.Tags()["tensors"]}


def test_tensorboard_has_one_step_axis_the_flags_as_hparams_and_the_images(logged_run):
    board = logged_run[0] / "tensorboard"
    train_steps, validation_steps = scalars(board / "train"), scalars(board / "validation")
    assert train_steps["loss"] == [1, 2, 3] and train_steps["learning_rate"] == [1, 2, 3]
    assert set(validation_steps) >= {"loss", "macro_f1"}
    assert all(steps == [1, 2, 3] for steps in validation_steps.values()), validation_steps

    accumulator = event_accumulator.EventAccumulator(str(board), size_guidance={"tensors": 0})
    accumulator.Reload()
    [content] = accumulator.PluginTagToContent("hparams").values()
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["backbone"].string_value == "baseline_cnn" and hparams["phase2_epochs"].number_value == 2
    assert set(hparams) == {field.name for field in dataclasses.fields(Config)}
    assert accumulator.Tensors("final/best_val_macro_f1")[0].step == 3
    for tag in ("inputs/augmented_training_batch", "validation/confusion_by_phylum",
                "validation/worst_classes_mistakes"):
        [event] = accumulator.Tensors(tag)
        width, height, png = tf.make_ndarray(event.tensor_proto)
        picture = tf.image.decode_png(png).numpy()
        assert picture.shape == (int(height), int(width), 3) and picture.std() > 0, tag


def test_an_interrupted_phase_says_where_it_resumes_and_a_new_progress_flag_is_not_another_run(
        tiny_data_dir, tmp_path, capsys):
    config = tiny_config(tiny_data_dir, tmp_path / "run", phase1_epochs=1, phase2_epochs=3, steps_per_epoch=2,
                         progress="line", phase1_cached_features=True)

    def stop_at_run_epoch_3(epoch, value):
        if epoch == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train.run(config, on_epoch_end=stop_at_run_epoch_3)
    first = capsys.readouterr()
    assert "(run epoch 1)" in first.out and "features baseline_cnn" not in first.err  # its bar: on a terminal
    train.run(dataclasses.replace(config, progress="none"))
    out = capsys.readouterr().out
    assert "phase1: already complete (1 epochs), skipped" in out
    assert re.search(r"^resuming phase2 after epoch 2 of 3 \(run epoch 3\) from .*backup.*; best val_macro_f1 so "
                     r"far \d\.\d{4}$", out, re.MULTILINE), out
    assert not any(EPOCH_LINE.match(line) for line in out.splitlines())
    accumulator = event_accumulator.EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    accumulator.Reload()
    assert accumulator.PluginTagToContent("hparams") and "final/best_val_macro_f1" in accumulator.Tags()["tensors"]
    assert not any(tag.startswith(("inputs/", "validation/")) for tag in accumulator.Tags()["tensors"])


def test_the_bar_is_finished_before_the_checkpoint_line(tiny_data_dir, tmp_path, capsys):
    config = tiny_config(tiny_data_dir, tmp_path / "run", phase1_epochs=0, phase2_epochs=2, steps_per_epoch=2,
                         progress="bar")
    train.run(config)
    out = capsys.readouterr().out
    improved = [match.end() for match in re.finditer(r"val_macro_f1 improved.*\n", out)]
    assert improved
    for end in improved:
        following = out[end:].split("Epoch ", 1)[0]
        assert "━" not in following, following
        before = out[:end].rsplit("\n", 2)[-3]
        assert "val_macro_f1" in before and "━" in before


@pytest.mark.parametrize("value, expected", [(0.41234, "0.4123"), (3e-5, "3e-05"), (1234.5, "1234"),
                                             (float("nan"), "nan")])
def test_numbers_read_as_a_person_reads_them(value, expected):
    assert console.number(value) == expected


def test_auto_progress_is_a_bar_on_a_terminal_only(tmp_path):
    class Terminal:
        def isatty(self):
            return True

    with open(tmp_path / "log", "w") as file:
        assert console.progress_mode("auto", file) == "line"
    assert console.progress_mode("auto", Terminal()) == "bar"
    assert console.progress_mode("none", Terminal()) == "none"
    assert all(console.progress_mode(mode) == mode for mode in ("bar", "line", "none"))
