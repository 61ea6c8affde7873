"""The layout of a run directory, written in one place so train, evaluate and predict agree on it.

model_dir/
  flags.txt                      the resolved flags (a flagfile reproducing the run)
  checkpoints/best.weights.h5    best validation macro-F1 over all phases so far
  backup/<phase>/                BackupAndRestore state while a phase runs (removed when it completes)
  logs/<phase>.csv               one row per epoch (CSVLogger, appended across restarts)
  logs/<phase>.done.json         written when a phase completes: a rerun skips the phase
  logs/oversample.families.json  the families the oversampling phase draws more often
  tensorboard/<phase>/           TensorBoard event files
  model.keras, labels.json       the best model (takes float 0..255 images) and its output names
  metrics.json                   validation and test results
"""

import dataclasses
import json
import pathlib
from collections.abc import Sequence

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
    def metrics(self) -> pathlib.Path:
        return self.model_dir / "metrics.json"

    def backup(self, phase: str) -> pathlib.Path:
        return self.model_dir / "backup" / phase

    def csv_log(self, phase: str) -> pathlib.Path:
        return self.model_dir / "logs" / f"{phase}.csv"

    def done_marker(self, phase: str) -> pathlib.Path:
        return self.model_dir / "logs" / f"{phase}.done.json"

    @property
    def oversampled_families(self) -> pathlib.Path:
        return self.model_dir / "logs" / "oversample.families.json"

    def tensorboard(self, phase: str) -> pathlib.Path:
        return self.model_dir / "tensorboard" / phase

    def history(self, phases: Sequence[str]) -> pd.DataFrame:
        """Every logged epoch of the given phases, in order, with a `phase` column."""
        frames = [pd.read_csv(self.csv_log(phase)).assign(phase=phase)
                  for phase in phases if self.csv_log(phase).exists()]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def mark_done(self, phase: str, summary: dict) -> None:
        self.done_marker(phase).parent.mkdir(parents=True, exist_ok=True)
        self.done_marker(phase).write_text(json.dumps(summary, indent=2))

    def read_done(self, phase: str) -> dict | None:
        marker = self.done_marker(phase)
        return json.loads(marker.read_text()) if marker.exists() else None
