"""The layout of a run directory, written in one place so train, evaluate and predict agree on it.

model_dir/
  flags.txt                      the resolved flags (a flagfile reproducing the run)
  checkpoints/best.weights.h5    best validation macro-F1 over all phases so far
  backup/<phase>/                BackupAndRestore state while a phase runs (removed when it completes), kept
                                 double; an unreadable one is set aside as backup/<phase>.unreadable-<time>
  logs/<phase>.csv               one row per epoch (CSVLogger, appended across restarts)
  logs/<phase>.done.json         written when a phase completes: a rerun skips the phase
  logs/oversample.families.json  the families the oversampling phase draws more often
  tensorboard/<phase>/           TensorBoard event files
  model.keras, labels.json       the best model (takes float 0..255 images) and its output names
  failure.json                   why the last run stopped early (a non-finite loss), with its phase and epoch
  metrics.json                   validation and test results
  calibration.json               the roll-up's temperatures and validation confidences (predict --rollup_precision)
  workertemp_<task>/             multi-worker runs only: a non-chief worker's own saves, deleted right after

Under MultiWorkerMirroredStrategy every worker shares model_dir but only the chief writes the files above. The
others save their backups, checkpoints and final model (saving runs collective ops, so every worker must) in
workertemp_<task>/ and delete it after each save; they read the chief's files only after a collective barrier
(trainer.training.distribute.agree), so never half-written.

Every file a later run reads is written whole or not at all (replace_atomically: temporary name, fsync,
rename), except the resume state, which Keras writes itself and keeps double (the previous state beside it).
"""

import dataclasses
import json
import os
import pathlib
import shutil
from collections.abc import Callable, Sequence

import pandas as pd


@dataclasses.dataclass(frozen=True)
class RunFiles:
    """Paths inside one run directory."""

    model_dir: pathlib.Path

    @property
    def flagfile(self) -> pathlib.Path:
        return self.model_dir / "flags.txt"

    @property
    def best_weights(self) -> pathlib.Path:
        return self.model_dir / "checkpoints" / "best.weights.h5"

    @property
    def model(self) -> pathlib.Path:
        return self.model_dir / "model.keras"

    @property
    def labels(self) -> pathlib.Path:
        return self.model_dir / "labels.json"

    @property
    def taxonomy(self) -> pathlib.Path:
        """The dataset's tree the model was trained on (tfds_rarespecies.labels.Taxonomy.to_text)."""
        return self.model_dir / "taxonomy.tsv"

    @property
    def metrics(self) -> pathlib.Path:
        return self.model_dir / "metrics.json"

    @property
    def calibration(self) -> pathlib.Path:
        """The roll-up's temperatures and validation confidences (trainer/training/calibration_file.py)."""
        return self.model_dir / "calibration.json"

    def backup(self, phase: str) -> pathlib.Path:
        return self.model_dir / "backup" / phase

    def csv_log(self, phase: str) -> pathlib.Path:
        return self.model_dir / "logs" / f"{phase}.csv"

    def done_marker(self, phase: str) -> pathlib.Path:
        return self.model_dir / "logs" / f"{phase}.done.json"

    @property
    def failure(self) -> pathlib.Path:
        return self.model_dir / "failure.json"

    @property
    def oversampled_labels(self) -> pathlib.Path:
        return self.model_dir / "logs" / "oversample.labels.json"

    def tensorboard(self, phase: str) -> pathlib.Path:
        return self.model_dir / "tensorboard" / phase

    def scratch(self, task: int) -> "RunFiles":
        """The files of non-chief worker `task` of a multi-worker run, laid out like the run's own."""
        return RunFiles(self.model_dir / f"workertemp_{task}")

    def history(self, phases: Sequence[str]) -> pd.DataFrame:
        """Every logged epoch of the given phases, in order, with a `phase` column."""
        frames = [pd.read_csv(self.csv_log(phase)).assign(phase=phase)
                  for phase in phases if self.csv_log(phase).exists() and self.csv_log(phase).stat().st_size]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def mark_done(self, phase: str, summary: dict) -> None:
        write_atomically(self.done_marker(phase), json.dumps(summary, indent=2))

    def read_done(self, phase: str) -> dict | None:
        marker = self.done_marker(phase)
        return json.loads(marker.read_text()) if marker.exists() else None


def write_atomically(path: pathlib.Path, text: str) -> None:
    """Writes text so that a reader (another worker, a resumed run) sees the old file or the whole new one."""
    replace_atomically(path, lambda partial: partial.write_text(text))


def replace_atomically(path: pathlib.Path, write: Callable[[pathlib.Path], object], suffix: str = "") -> None:
    """Calls write(temporary path) beside `path`, flushes it to disk and renames it over `path`: a kill at any
    instant leaves the old file or the whole new one, never half of one.

    suffix: what the temporary name must end with for the writer (Keras wants `.weights.h5`, `.keras`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial(path, suffix)
    try:
        write(partial)
        with open(partial, "rb") as written:
            os.fsync(written.fileno())
        os.replace(partial, path)
    except BaseException:  # a writer that fails leaves no half file behind (a kill leaves one, never read)
        partial.unlink(missing_ok=True)
        raise


def replace_folder(target: pathlib.Path, write: Callable[[pathlib.Path], object]) -> pathlib.Path:
    """The folder version: write(temporary folder) fills a sibling of target, which then takes target's place
    (the old folder removed first: a kill between the two leaves the new one whole under its temporary name)."""
    partial = _partial(target)
    shutil.rmtree(partial, ignore_errors=True)
    write(partial)
    if target.exists():
        shutil.rmtree(target)
    os.replace(partial, target)
    return target


def _partial(path: pathlib.Path, suffix: str = "") -> pathlib.Path:
    """The temporary name beside path that a replacement is written under (hidden, the writer's pid)."""
    return path.with_name(f".{path.name}.{os.getpid()}.partial{suffix}")
