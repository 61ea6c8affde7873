"""What a study leaves in its directory, written so that a kill or a failure in the middle of writing leaves the
previous trials.csv and best.flags whole (the study itself lives in its storage)."""

import pathlib

import optuna
import pandas as pd
import pytest

from tests.tuning.common import tune_args
from trainer import tune
from trainer.tuning import outputs, space
from trainer.tuning.storage import Storage
from trainer.tuning.study import StudyHandle


def _add_trial(study: optuna.Study, base, settings, value: float) -> None:
    trial = study.ask()
    space.suggest(trial, space.SPACES[settings.search_space], base)
    study.tell(trial, value)


def _handle_with_trials(base, settings, values) -> StudyHandle:
    study = optuna.create_study(direction="maximize")
    for value in values:
        _add_trial(study, base, settings, value)
    return StudyHandle(study, Storage(optuna.storages.InMemoryStorage(), "memory", None, 60.0, 1))


@pytest.mark.parametrize("broken", ["trials.csv", "best.flags"])
def test_a_failure_while_writing_leaves_the_previous_outputs_whole(tmp_path, monkeypatch, broken):
    base, settings = tune.parse(tune_args(tmp_path / "data", tmp_path, "atomic"))
    settings.study_dir.mkdir(parents=True)
    handle = _handle_with_trials(base, settings, [0.5, 0.7])
    outputs.write_outputs(handle, base, settings)
    before = {name: (settings.study_dir / name).read_bytes() for name in ("trials.csv", "best.flags")}
    assert len(pd.read_csv(settings.study_dir / "trials.csv")) == 2

    _add_trial(handle.study, base, settings, 0.9)  # a new best: best.flags would change

    def half_then_fail(original):
        def write(target, data, *args, **kwargs):
            original(target, data[: len(data) // 2] if isinstance(data, str) else data.to_string()[:20])
            raise OSError("disk full")
        return write

    if broken == "trials.csv":
        monkeypatch.setattr(pd.DataFrame, "to_csv", lambda frame, path, **kwargs: half_then_fail(
            pathlib.Path.write_text)(pathlib.Path(path), frame))
    else:
        monkeypatch.setattr(pathlib.Path, "write_text", half_then_fail(pathlib.Path.write_text))
    with pytest.raises(OSError, match="disk full"):
        outputs.write_outputs(handle, base, settings)
    assert (settings.study_dir / broken).read_bytes() == before[broken]  # the previous version, whole
    assert not [path.name for path in settings.study_dir.iterdir() if "partial" in path.name]
