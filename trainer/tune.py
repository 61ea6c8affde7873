r"""Optuna studies over the trainer: every trial is one `trainer.training.train.run` with a few flags overridden.

    python -m trainer.tune --flagfile=configs/tune_inceptionv3.flags --study_name=incv3 --n_trials=20 --gpus=0,1,2,3
    python -m trainer.tune --flagfile=configs/tune_inceptionv3.flags --study_name=incv3 \
        --storage=postgresql://user@db-host/optuna          # the same study from several machines
    python -m trainer.main --flagfile=runs/tune/incv3/best.flags   # retrain the winner

Flags are the trainer's (the base config every trial starts from) plus the tuner's own
(trainer/tuning/settings.py). The search space (trainer/tuning/space.py) fixes and samples Config fields; the
objective is the run's best validation macro-F1, maximised, each epoch's value reported to the pruner; no trial
reads the test split (the retrain of best.flags does, once). A trial that raises is recorded FAIL with its `error`
and the study goes on. Each finished trial prints one line (number, outcome, validation macro-F1, epochs, minutes,
parameters); what it prints itself goes to trial_NNNN.log (--trial_output=full: to the console).

Workers: by default this process is the one worker. --gpus=0,1 starts one worker process per GPU (group, e.g.
0+1 for two GPUs per trial) with CUDA_VISIBLE_DEVICES pinned; --workers=N starts N CPU workers
(trainer/tuning/launcher.py). Every worker of every machine draws trials from the one study until exactly
--n_trials are used (trainer/tuning/storage.py: budget, dead workers, retries); rerunning the same command
resumes a study and runs only what is left. The workers of one machine split its --train_cache_gib.

Study directory <tune_dir>/<study_name>/: journal.log (the default storage), trial_NNNN/ (each trial's run
directory with flags.txt) and trial_NNNN.log (what the trial printed), features/ (the embeddings all trials
share), workers/ (worker logs), and at the end trials.csv, history.png, importances.png, intermediate.png,
timeline.png and best.flags.
"""

import socket
import sys

from trainer import cli

cli.quiet_native_logs()

from trainer.training import run_dir  # noqa: E402
from trainer.training.config import Config  # noqa: E402  (after the log level is set: the tuner imports TensorFlow)
from trainer.tuning import launcher, outputs, space, storage, study  # noqa: E402
from trainer.tuning.settings import Settings, TuneError, check_settings  # noqa: E402

PROGRAM = "trainer.tune"


def parse(argv: list[str]) -> tuple[Config, Settings]:
    """(base config, settings) from arguments without the program name, through a private FlagValues."""
    return cli.parse(argv, Config, Settings, program=PROGRAM)


def run(base: Config, settings: Settings) -> dict:
    """The whole command: checks, the study, the workers, the outputs. Returns what write_outputs wrote, with
    a line per worker process that failed."""
    check_settings(settings)
    base = study.prepare_base(base, settings)
    study.check_base(base, settings)
    run_dir.check_folder(settings.study_dir, "--tune_dir")
    # One launcher per study and machine; other machines sharing the folder run their own (and their workers).
    try:
        with run_dir.FolderLock(settings.study_dir / f".lock-{socket.gethostname()}"):
            return _run_study(base, settings)
    except run_dir.RunLockedError as error:
        raise TuneError(f"--study_name={settings.study_name}: {error} on this machine: wait for it to finish, "
                        "or give it more workers next time (--workers, --gpus)") from None


def _run_study(base: Config, settings: Settings) -> dict:
    """The study itself, once this process holds the study's folder on this machine."""
    handle = study.open_study(base, settings)
    print(space.describe(settings.search_space), flush=True)
    if settings.search_space == "head" and not base.phase1_cached_features:
        print("tune: note: --search_space=head without --phase1_cached_features runs the frozen backbone over every "
              "image in every epoch of every trial; --phase1_cached_features --augment=none computes the "
              "embeddings once for the whole study", flush=True)
    print(f"tune: study {settings.study_name} in {handle.storage.label}: "
          f"{outputs.progress(handle.study, settings.n_trials)}", flush=True)
    for line in storage.fail_stale_trials(handle.study, handle.storage):
        print(f"tune: {line}", flush=True)
    failures = launcher.run_workers(handle, base, settings)
    written = outputs.write_outputs(handle, base, settings)
    for line in failures:
        print(f"tune: {line}", file=sys.stderr, flush=True)
    return {**written, "worker_failures": failures}


def main(base: Config, settings: Settings) -> int:
    """A worker process started by the launcher runs its trials; the user's command runs the study and exits 1
    when a worker failed or no trial completed."""
    index = launcher.worker_index()
    if index is not None:
        launcher.run_child(base, settings, index)
        return 0
    written = run(base, settings)
    return 1 if written["worker_failures"] or "best_flags" not in written else 0


if __name__ == "__main__":
    cli.run(PROGRAM, main, Config, Settings, interrupted="interrupted; rerun the same command to resume the study")
