"""What a kill at the worst instant leaves behind: a resume state torn while written, a best checkpoint half
saved; and the stop at the first non-finite loss. In-process, on tiny models: the end-to-end kill and resume of
`python -m trainer.main` is tests/training/test_resume.py."""

import dataclasses
import json

import keras
import numpy as np
import pytest

from tests.training.test_end_to_end import tiny_config
from trainer.training import callbacks, run_dir, train
from trainer.training import config as config_lib


def _model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    return model


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(16, 4)).astype("float32"), rng.integers(0, 3, 16)


def _fit(model, backup, epochs, restarts: list):
    features, labels = _data()
    history = model.fit(features, labels, epochs=epochs, batch_size=8, verbose=0, callbacks=[
        callbacks.SharedBackupAndRestore(str(backup), restart=lambda: restarts.append(1))])
    return history.epoch


def _interrupted_after(backup, epochs: int) -> None:
    """A fit killed after `epochs` epochs: its backup is left as the kill left it."""

    class Kill(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 == epochs:
                raise KeyboardInterrupt

    features, labels = _data()
    with pytest.raises(KeyboardInterrupt):
        _model().fit(features, labels, epochs=10, batch_size=8, verbose=0,
                     callbacks=[callbacks.SharedBackupAndRestore(str(backup), restart=lambda: None), Kill()])


def _tear(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_resume_state_torn_while_written_falls_back_to_the_one_before(tmp_path):
    backup = tmp_path / "backup"
    _interrupted_after(backup, 3)
    _tear(backup / "latest.weights.h5")  # the kill came while the fourth epoch's state was being written
    restarts = []
    assert _fit(_model(), backup, epochs=5, restarts=restarts) == [2, 3, 4]  # epoch 3 was the one in flight
    assert not restarts and not backup.exists()


@pytest.mark.parametrize("torn", ["weights", "metadata"])
def test_an_unreadable_resume_state_is_set_aside_and_the_phase_restarts(tmp_path, torn, capsys):
    backup = tmp_path / "backup"
    _interrupted_after(backup, 3)
    if torn == "weights":
        _tear(backup / "latest.weights.h5")
        _tear(backup / "latest.weights.h5.bkp")
    else:
        (backup / "training_metadata.json").write_text('{"epoch": 3, "ba')
        (backup / "training_metadata.json.bkp").write_text('{"ep')
    restarts = []
    assert _fit(_model(), backup, epochs=4, restarts=restarts) == [0, 1, 2, 3]
    assert restarts == [1]
    [aside] = tmp_path.glob("backup.unreadable-*")
    assert (aside / "latest.weights.h5").exists()
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: resume state")]
    assert len(warning) == 1 and "set aside as" in warning[0]


def test_a_best_checkpoint_killed_while_saved_leaves_the_previous_one_whole(tmp_path):
    path = tmp_path / "checkpoints" / "best.weights.h5"
    model = _model()
    checkpoint = callbacks.BestCheckpoint(path, "val_score", best_so_far=None, verbose=False)
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"val_score": 0.5})
    saved = path.read_bytes()

    def killed_while_saving(partial):
        with open(partial, "wb") as half:
            half.write(saved[: len(saved) // 2])
        raise KeyboardInterrupt

    model.save_weights = killed_while_saving
    with pytest.raises(KeyboardInterrupt):
        checkpoint.on_epoch_end(1, {"val_score": 0.9})
    assert path.read_bytes() == saved
    _model().load_weights(path)
    checkpoint.on_epoch_end(2, {"val_score": float("nan")})
    checkpoint.on_epoch_end(3, {"val_score": 0.4})
    assert path.read_bytes() == saved


def test_replace_atomically_writes_the_whole_file_or_nothing(tmp_path):
    target = tmp_path / "flags.txt"
    run_dir.write_atomically(target, "--seed=1\n")

    def torn(partial):
        partial.write_text("--se")
        raise OSError("disk full")

    with pytest.raises(OSError):
        run_dir.replace_atomically(target, torn)
    assert target.read_text() == "--seed=1\n"


def test_a_non_finite_loss_stops_the_run_and_keeps_the_best_checkpoint(tiny_data_dir, tmp_path):
    sane = tiny_config(tiny_data_dir, tmp_path, phase2_epochs=0)
    train.run(sane)
    best = (tmp_path / "checkpoints" / "best.weights.h5").read_bytes()
    absurd = dataclasses.replace(sane, model_dir=str(tmp_path / "absurd"), phase1_epochs=0, phase2_epochs=3,
                                 optimizer="sgd", phase2_learning_rate=1e30, lr_schedule="constant")
    (tmp_path / "absurd" / "checkpoints").mkdir(parents=True)  # this command's run, resumed with a best checkpoint
    (tmp_path / "absurd" / "flags.txt").write_text(config_lib.flagfile_text(absurd))
    (tmp_path / "absurd" / "checkpoints" / "best.weights.h5").write_bytes(best)
    with pytest.raises(callbacks.NonFiniteLossError, match=r"became nan in phase2 epoch 1 step \d+: lower "
                                                           r"--phase2_learning_rate") as raised:
        train.run(absurd)
    assert "\n" not in str(raised.value)
    failure = json.loads((tmp_path / "absurd" / "failure.json").read_text())
    assert failure["phase"] == "phase2" and failure["epoch"] == 1 and failure["loss"] == "nan"
    assert (tmp_path / "absurd" / "checkpoints" / "best.weights.h5").read_bytes() == best
    assert not (tmp_path / "absurd" / "metrics.json").exists()
