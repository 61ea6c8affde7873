"""The layout of a run directory, written in one place so train, evaluate and predict agree on it.

model_dir/
  flags.txt                      the resolved flags (a flagfile reproducing the run)
  trained_on.json                what the run was trained on: the dataset, its split sizes and each split's
                                 digest, the weights' identity; a rerun on anything else is refused
  .lock                          held (fcntl) by the one process writing the run; names its pid and host
  checkpoints/best.weights.h5    best validation macro-F1 over all phases so far (with --wise_ft, the average)
  checkpoints/{probe,finetuned}.weights.h5  --wise_ft only: the best after phase 1, and after the last phase
  wise_ft.json                   --wise_ft only: the alpha the average used (and each alpha's score)
  backup/<phase>/                BackupAndRestore state while a phase runs (removed when it completes), kept
                                 double; an unreadable one is set aside as backup/<phase>.unreadable-<time>
  logs/<phase>.csv               one row per epoch (CSVLogger, appended across restarts)
  logs/<phase>.done.json         written when a phase completes: a rerun skips the phase
  logs/oversample.families.json  the families the oversampling phase draws more often
  tensorboard/{train,validation}/ per-epoch scalars on one axis across phases; tensorboard/ hparams, images
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
import fcntl
import json
import os
import pathlib
import shutil
import socket
from collections.abc import Callable, Sequence

import pandas as pd

from trainer import cli

# The folders the commands after training write into model_dir: trainer.evaluate, and trainer.export's two.
EVAL_DIR, SAVED_MODEL_DIR, LITERT_DIR = "eval", "saved_model", "litert"
# The names directly in model_dir that a run and its commands write (files and folders).
RUN_NAMES = ("flags.txt", "trained_on.json", "checkpoints", "backup", "logs", "tensorboard", "model.keras",
             "labels.json", "taxonomy.tsv", "failure.json", "metrics.json", "calibration.json", EVAL_DIR,
             SAVED_MODEL_DIR, LITERT_DIR, "wise_ft.json")


@dataclasses.dataclass(frozen=True)
class RunFiles:
    """Paths inside one run directory."""

    model_dir: pathlib.Path

    @property
    def flagfile(self) -> pathlib.Path:
        return self.model_dir / "flags.txt"

    @property
    def trained_on(self) -> pathlib.Path:
        return self.model_dir / "trained_on.json"

    @property
    def lock(self) -> pathlib.Path:
        return self.model_dir / ".lock"

    def owns(self, path: pathlib.Path) -> bool:
        """Whether path is one of the run's own files or inside one of its folders (what another command's
        output must never overwrite)."""
        try:
            relative = path.resolve().relative_to(self.model_dir.resolve())
        except ValueError:
            return False
        top = relative.parts[0] if relative.parts else ""
        return top in RUN_NAMES or top.startswith(("workertemp_", "."))

    def run_files_present(self) -> list[str]:
        """The names in model_dir but the lock and the workers' scratch folders: what a start must not adopt
        without flags.txt."""
        if not self.model_dir.is_dir():
            return []
        return sorted(path.name for path in self.model_dir.iterdir()
                      if path != self.lock and not path.name.startswith("workertemp_"))

    @property
    def best_weights(self) -> pathlib.Path:
        return self.model_dir / "checkpoints" / "best.weights.h5"

    @property
    def probe_weights(self) -> pathlib.Path:
        """--wise_ft: the best checkpoint when phase 1 completed (the linear probe)."""
        return self.model_dir / "checkpoints" / "probe.weights.h5"

    @property
    def finetuned_weights(self) -> pathlib.Path:
        """--wise_ft: the best checkpoint after the last phase, before the average replaced it."""
        return self.model_dir / "checkpoints" / "finetuned.weights.h5"

    @property
    def wise_ft(self) -> pathlib.Path:
        """--wise_ft: the alpha the average used (trainer/training/wise_ft.py)."""
        return self.model_dir / "wise_ft.json"

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

    @property
    def tensorboard(self) -> pathlib.Path:
        return self.model_dir / "tensorboard"

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


class RunLockedError(OSError):
    """Another live process holds the folder's lock; the message names it (pid and host)."""


class FolderLock:
    """An exclusive lock on a folder while one process writes it: an fcntl lock on <folder>/.lock, which the
    operating system releases when the process ends however it ends, so a dead holder's lock is simply taken
    over. The holder writes its pid and host into the file for the refusal a second process prints."""

    def __init__(self, path: pathlib.Path):
        self.path, self._file = path, None

    def __enter__(self) -> "FolderLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunLockedError(f"{self.path.parent} is being written by {holder}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()  # closing releases the lock; the file stays, empty of meaning until locked again
        self._file = None


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


class NotAFolderError(cli.UserError):
    """A folder the user named is a file, or lies under one; the message is the one line shown."""


def check_folder(path: pathlib.Path, flag: str) -> None:
    """Refuses, in one line, a folder to write that is a file or would have to be made inside one."""
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                raise NotAFolderError(f"{flag}={path}: {part} is a file, not a folder: choose another {flag}")
            return


class NotOursError(cli.UserError):
    """A folder the product would replace but did not write; the message is the one line shown."""


# The file that marks a folder as written by this project, naming the writer: only such a folder is ever
# replaced or deleted, whatever --overwrite says.
OWNER_MARKER = ".written-by-rare-species"


def replace_folder(target: pathlib.Path, write: Callable[[pathlib.Path], object],
                   writer: str = "rare-species") -> pathlib.Path:
    """The folder version: write(temporary folder) fills a sibling of target, which then takes target's place
    (the old folder removed first: a kill between the two leaves the new one whole under its temporary name).
    The new folder is marked as written by `writer`; an existing target without that mark (a user's folder,
    a file) is refused in one line and left untouched."""
    if target.exists() and not (target / OWNER_MARKER).is_file():
        kind = "folder" if target.is_dir() else "file"
        raise NotOursError(f"{target} is a {kind} this project did not write (no {OWNER_MARKER} in it), so it is "
                           "never replaced, even with --overwrite: choose a new folder, or remove it yourself")
    partial = _partial(target)
    shutil.rmtree(partial, ignore_errors=True)
    write(partial)
    (partial / OWNER_MARKER).write_text(f"written by {writer}\n")
    if target.exists():
        shutil.rmtree(target)
    os.replace(partial, target)
    return target


def _partial(path: pathlib.Path, suffix: str = "") -> pathlib.Path:
    """The temporary name beside path that a replacement is written under (hidden, the writer's pid)."""
    return path.with_name(f".{path.name}.{os.getpid()}.partial{suffix}")
