"""<model_dir>/calibration.json (trainer.numbers.calibration.RollupCalibration): what the roll-up needs at
predict time, fitted on the validation split and stored with the model, so `trainer.predict
--rollup_precision=P` chooses its per-rank thresholds for any P without the dataset.

    {"label_rank": "family", "ranks": ["phylum", "class", "order", "family"],
     "temperatures": {head: T},                       one per head in the tree (calibration.fit_temperature)
     "validation": {"examples": n, "nll": {head: ...}, "nll_scaled": {head: ...}},
     "confidences": {rank: [...]}, "correct": {rank: [...]}}

confidences are the validation images' consistent confidences at each rank (rollup.label_tree's tree, from the
temperature-scaled heads), surest first, and correct says whether the consistent prediction was right there:
a threshold reaching a target precision is then rollup.precision_threshold of the two. Written by
`trainer.training.train.run` at the end of a run and by `trainer.evaluate --rollup_precision` for a run without one
(trainer.training.run_dir.write_atomically: a reader sees the whole file or none).
"""

import json
import pathlib
from collections.abc import Sequence

from trainer import cli
from trainer.numbers import calibration, rollup
from trainer.training.run_dir import RunFiles, write_atomically


class CalibrationFileError(cli.UserError):
    """calibration.json is there but not readable; the message is one line."""


def write(model_dir: str | pathlib.Path, calibrated: calibration.RollupCalibration) -> pathlib.Path:
    """Writes <model_dir>/calibration.json atomically; returns its path."""
    path = RunFiles(pathlib.Path(model_dir).expanduser()).calibration
    write_atomically(path, json.dumps(calibrated.to_json()) + "\n")
    return path


def read(model_dir: str | pathlib.Path) -> calibration.RollupCalibration | None:
    """The run's calibration.json, None when it has none; CalibrationFileError when it cannot be read."""
    path = RunFiles(pathlib.Path(model_dir).expanduser()).calibration
    if not path.is_file():
        return None
    try:
        return calibration.RollupCalibration.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as error:
        detail = str(error).splitlines()[0] if str(error) else "no detail"
        raise CalibrationFileError(f"{path}: not a calibration file of this project ({type(error).__name__}: "
                                   f"{detail}); delete it and write it again with `python -m trainer.evaluate "
                                   f"--model_dir={model_dir} --rollup_precision=0.95`") from None


def read_matching(model_dir: str | pathlib.Path, tree: rollup.Tree,
                  heads: Sequence[str]) -> calibration.RollupCalibration:
    """The run's calibration.json for the roll-up of the model with that tree and those heads; one
    CalibrationFileError line when it is missing or belongs to another model."""
    write_it = (f"write it with `python -m trainer.evaluate --model_dir={model_dir} --rollup_precision=0.95` "
                "(or retrain)")
    calibrated = read(model_dir)
    if calibrated is None:
        raise CalibrationFileError(f"--rollup_precision: {model_dir} has no calibration.json; {write_it}")
    if calibrated.ranks != tree.ranks or set(calibrated.temperatures) - set(heads):
        raise CalibrationFileError(f"--rollup_precision: {model_dir}/calibration.json is not this model's (ranks "
                                   f"{','.join(calibrated.ranks)}, heads {','.join(calibrated.temperatures)}); "
                                   f"delete it and {write_it}")
    return calibrated
