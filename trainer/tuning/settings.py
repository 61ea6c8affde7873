"""The tuner's own flags: the Settings dataclass, each field's help, choices and numeric bounds next to its
default (trainer/cli.py makes the flags, so `--n_trials=0` fails while the flags are parsed), and
`check_settings`, the rules between fields and the environment that a flag's own bounds cannot express.
"""

import dataclasses
import pathlib
import re

from trainer import cli
from trainer.cli import field
from trainer.tuning import space as space_lib

SAMPLERS = ("tpe", "random", "qmc", "cmaes")
PRUNERS = ("median", "hyperband", "none")
TRIAL_OUTPUTS = ("line", "full")


class TuneError(cli.UserError):
    """A tuner setting that cannot work; the message is the one line shown to the user."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """The tuner's own flags (the trainer's Config fields are flags of trainer.tune too)."""

    study_name: str = field("", "Name of the study (letters, digits, . _ -): its directory under --tune_dir and "
                                "its name in the storage. Rerunning with the same name resumes it.", group="study")
    n_trials: int = field(20, "Trials of the whole study over all workers, machines and restarts (COMPLETE, "
                              "PRUNED or FAIL; a retried trial counts once). Raise it to extend a study.", lower=1,
                          group="study")
    search_space: str = field("head", "Search space from trainer/tuning/space.py: head = phase 1 only on the "
                                      "frozen backbone (cached embeddings: seconds per trial); full = both "
                                      "phases.", tuple(space_lib.SPACES), group="study")
    sampler: str = field("tpe", "Sampler, seeded by --seed (+ the worker's index): tpe (multivariate, constant "
                                "liar for parallel workers), random, qmc (Sobol), cmaes.", SAMPLERS,
                         group="sampler and pruner")
    sampler_startup_trials: int = field(10, "Random trials before TPE / CMA-ES start modelling.", lower=0,
                                        group="sampler and pruner")
    pruner: str = field("median", "Stops unpromising trials on their per-epoch validation macro-F1: median "
                                  "(below the median of earlier trials at the same epoch), hyperband, none.",
                        PRUNERS, group="sampler and pruner")
    pruner_startup_trials: int = field(5, "Median pruner: finished trials before any trial is pruned.", lower=0,
                                       group="sampler and pruner")
    pruner_warmup_epochs: int = field(1, "Median pruner: epochs every trial runs before it may be pruned.", lower=0,
                                      group="sampler and pruner")
    gpus: str = field("", "Start one worker process per GPU, e.g. 0,1,2,3, each with CUDA_VISIBLE_DEVICES "
                          "set to its GPU; 0+1,2+3 gives each worker two GPUs (mirrored). Empty: see --workers.",
                      group="workers")
    workers: int = field(0, "Start this many CPU worker processes (CUDA_VISIBLE_DEVICES empty, the CPU threads "
                            "shared out); 0 = this process is the one worker, on the devices it sees.", lower=0,
                         group="workers")
    storage: str = field("", "Where the study lives: empty = the journal file <tune_dir>/<study_name>/journal.log "
                             "(no server; shared by this machine's workers, or by machines sharing the "
                             "directory); a journal file path; or a database URL, e.g. "
                             "postgresql://user@db-host/optuna to run one study from several machines "
                             "(pip install -e '.[postgres]').", group="storage", path=True)
    tune_dir: str = field("runs/tune", "Study directories go here: <tune_dir>/<study_name>/.", group="study", path=True)
    trial_output: str = field("line", "line: one line per finished trial (its number, parameters, validation "
                                      "macro-F1, epochs, minutes); what the trial prints (Keras, TensorFlow, "
                                      "a traceback) goes to <study>/trial_NNNN.log. full: every trial prints all "
                                      "of it here.", TRIAL_OUTPUTS, group="study")
    timeout: float = field(0.0, "Seconds after which a worker starts no new trial (0 = none); rerun to go on.",
                           lower=0, group="workers")
    heartbeat: int = field(60, "Seconds between a running trial's heartbeats; a trial of another host whose "
                               "heartbeat is 2 intervals old is failed and retried (same-host workers are "
                               "checked at once by process id).", lower=1, group="workers")
    max_retries: int = field(2, "Times a trial whose worker died (kill, crash, lost machine) is run again.",
                             lower=0, group="workers")

    @property
    def study_dir(self) -> pathlib.Path:
        return pathlib.Path(self.tune_dir).absolute() / self.study_name

    @property
    def space(self) -> space_lib.SearchSpace:
        return space_lib.SPACES[self.search_space]


def gpu_groups(gpus: str) -> list[str]:
    """'0,1' -> ['0', '1']; '0+1,2+3' -> ['0,1', '2,3'] (CUDA_VISIBLE_DEVICES of each worker)."""
    groups = [group.strip() for group in gpus.split(",")] if gpus.strip() else []
    for group in groups:
        if not re.fullmatch(r"\d+(\+\d+)*", group):
            raise TuneError(f"--gpus={gpus}: give GPU indices separated by commas (0,1,2,3), or + within a "
                            "worker's group (0+1,2+3)")
    return [group.replace("+", ",") for group in groups]


def check_settings(settings: Settings) -> None:
    """Raises TuneError on the first tuner setting that cannot work, naming it and what to do. The flags'
    choices and bounds are checked again for settings built in code, which no flag parser saw."""
    cli.check_fields(settings, TuneError)
    if not settings.study_name:
        raise TuneError("--study_name is empty: name the study, e.g. --study_name=incv3")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", settings.study_name):
        raise TuneError(f"--study_name={settings.study_name}: use letters, digits, '.', '_' and '-' only")
    if settings.gpus and settings.workers:
        raise TuneError(f"--gpus={settings.gpus} and --workers={settings.workers}: give one of them (--gpus: one "
                        "worker per GPU; --workers: N CPU workers)")
    gpu_groups(settings.gpus)
    if settings.sampler == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise TuneError("--sampler=cmaes needs the cmaes package: pip install cmaes") from None
