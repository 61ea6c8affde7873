"""The run directory: writable (or creatable), enough free disk for the checkpoints, and an existing run in it
one that these flags resume rather than one trainer.main would refuse."""

import dataclasses
import json
import pathlib
import shutil
import tempfile

from trainer.preflight import data
from trainer.preflight.report import Result, fail, ok, warn
from trainer.training import models, train
from trainer.training.config import Config
from trainer.training.run_dir import RunFiles

GIB = 1 << 30
# Optimizer slots per trainable value: Adam and AdamW keep two moments, SGD one momentum.
OPTIMIZER_SLOTS = {"adam": 2, "adamw": 2, "sgd": 1}


def existing_ancestor(path: pathlib.Path) -> pathlib.Path:
    """The path itself when it exists, else its nearest existing parent (where trainer.main would create it)."""
    return next(candidate for candidate in (path, *path.parents) if candidate.exists())


def checkpoint_bytes(config: Config) -> int:
    """Disk the run's weight files take at their largest: the best checkpoint and the resume state kept double
    (each with the optimizer's slots), model.keras, and one more copy while a file is replaced atomically."""
    classifier = models.build_classifier(dataclasses.replace(config, weights="none"), [], data.class_counts(config))
    per_weights_file = 1 + OPTIMIZER_SLOTS[config.optimizer]
    return classifier.model.count_params() * 4 * (3 * per_weights_file + 2)


def run_state(files: RunFiles) -> tuple[str, str | None]:
    """(what the directory holds, the last run's failure line or None), for a directory whose flags match."""
    if not files.flagfile.exists():
        return "no run yet", None
    done = [phase for phase in train.PHASES if files.read_done(phase)]
    state = ("a finished run with these flags (a rerun evaluates it again)" if files.metrics.exists() else
             f"an unfinished run with these flags, {', '.join(done) or 'no phase'} done: trainer.main resumes it")
    if not files.failure.exists():
        return state, None
    failure = json.loads(files.failure.read_text())
    return state, (f"its last attempt stopped on a {failure.get('reason', 'failure')} ({failure.get('loss')}) in "
                   f"{failure.get('phase')} epoch {failure.get('epoch')} step {failure.get('step')}, see "
                   f"{files.failure}: lower that phase's learning rate or try --mixed_precision=none")


def check(config: Config) -> Result:
    files = RunFiles(pathlib.Path(config.model_dir).expanduser())
    where = existing_ancestor(files.model_dir.absolute())
    if not where.is_dir():
        return fail("model_dir", f"--model_dir={config.model_dir} is not writable: {where} is a file, not a "
                                 "directory: choose another --model_dir")
    try:
        with tempfile.TemporaryFile(dir=where):
            pass
    except OSError as error:
        return fail("model_dir", f"--model_dir={config.model_dir} is not writable: cannot create a file in {where} "
                                 f"({error.strerror}): choose a writable --model_dir or fix its permissions")
    train.check_claim(files, config)  # another run in model_dir: trainer.main's one-line refusal
    need, free = checkpoint_bytes(config), shutil.disk_usage(where).free
    space = f"{free / GIB:.1f} GiB free on {where}, the run's weight files need about {need / GIB:.2f} GiB"
    if free < need:
        return fail("model_dir", f"--model_dir={config.model_dir}: only {space}: free some space or choose another "
                                 "--model_dir")
    state, failure = run_state(files)
    message = f"{config.model_dir}: writable, {state}; {space}"
    if failure:
        return warn("model_dir", f"{message}; {failure}")
    if free < 2 * need:
        return warn("model_dir", f"{message}: little margin for logs and the feature cache")
    return ok("model_dir", message)
