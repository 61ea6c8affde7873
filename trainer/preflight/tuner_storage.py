"""The tuner's storage, opened as trainer.tune opens it (trainer/tuning/storage.py): a database reachable
with its driver installed, or a journal file that can be written; and the studies it already holds."""

import pathlib

import optuna

from trainer.preflight.report import Result, ok
from trainer.tuning import settings, storage


def check(spec: str) -> Result:
    if not spec:
        return ok("storage", "no --storage given, nothing to reach (trainer.tune's default is a journal file in "
                             "its study directory)")
    defaults = settings.Settings()
    # The study directory only places the default journal file, and spec is not the default.
    opened = storage.open_storage(spec, pathlib.Path.cwd(), defaults.heartbeat, defaults.max_retries)
    studies = optuna.study.get_all_study_names(storage=opened.optuna_storage)
    shown = f": {', '.join(studies[:5])}{', ...' if len(studies) > 5 else ''}" if studies else ""
    return ok("storage", f"{opened.label}: reachable, {len(studies)} stud{'y' if len(studies) == 1 else 'ies'}{shown}")
