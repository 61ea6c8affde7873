"""Optuna studies over the trainer: every trial is one `trainer.train.run` with a few flags overridden.

    python -m trainer.tune --flagfile=configs/tune_inceptionv3.flags --study_name=incv3 --n_trials=20 --gpus=0,1,2,3
    python -m trainer.tune --flagfile=configs/tune_inceptionv3.flags --study_name=incv3 \
        --storage=postgresql://user@db-host/optuna          # the same study from several machines
    python -m trainer.main --flagfile=runs/tune/incv3/best.flags   # retrain the winner

Flags are the trainer's (the base config every trial starts from) plus the tuner's own (Settings below). The
search space (trainer/tune_space.py) fixes and samples Config fields; the objective is the run's best
validation macro-F1, maximised; each epoch's value is reported to the pruner through train.run's
on_epoch_end hook. A trial that raises is recorded FAIL with its `error` and the study goes on.

Workers: by default this process is the one worker. --gpus=0,1 starts one worker process per GPU (group, e.g.
0+1 for two GPUs per trial) with CUDA_VISIBLE_DEVICES pinned; --workers=N starts N CPU workers. Every worker
of every machine draws trials from the one study until exactly --n_trials are used (trainer/tune_storage.py:
budget, dead workers, retries); rerunning the same command resumes a study and runs only what is left.
The workers of one machine split its --train_cache_gib (decoded training images kept in memory) evenly.

Study directory <tune_dir>/<study_name>/: journal.log (the default storage), trial_NNNN/ (each trial's run
directory with flags.txt), features/ (the embeddings all trials share), workers/ (worker logs), and at the end
trials.csv, history.png, importances.png, intermediate.png, timeline.png and best.flags.
"""

import contextlib
import dataclasses
import gc
import math
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
import zlib

import keras
import optuna
from absl import app
from absl import flags as absl_flags
from optuna.trial import TrialState

from trainer import flags, inputs, train, tune_space, tune_storage
from trainer.config import Config, ConfigError

WORKER_FLAG = "--tune_worker="  # hidden: stripped before absl parses, so --helpfull does not list it
SAMPLERS = ("tpe", "random", "qmc", "cmaes")
PRUNERS = ("median", "hyperband", "none")


class TuneError(ValueError):
    """A tuner setting that cannot work; the message is the one line shown to the user."""


def _field(default, help_text: str, choices: tuple[str, ...] | None = None):
    return dataclasses.field(default=default, metadata={"help": help_text, "choices": choices})


@dataclasses.dataclass(frozen=True)
class Settings:
    """The tuner's own flags (the trainer's Config fields are flags of trainer.tune too)."""

    study_name: str = _field("", "Name of the study (letters, digits, . _ -): its directory under --tune_dir and "
                                 "its name in the storage. Rerunning with the same name resumes it.")
    n_trials: int = _field(20, "Trials of the whole study over all workers, machines and restarts (COMPLETE, "
                               "PRUNED or FAIL; a retried trial counts once). Raise it to extend a study.")
    search_space: str = _field("head", "Search space from trainer/tune_space.py: head = phase 1 only on the "
                                       "frozen backbone (cached embeddings: seconds per trial); full = both "
                                       "phases.", tuple(tune_space.SPACES))
    sampler: str = _field("tpe", "Sampler, seeded by --seed (+ the worker's index): tpe (multivariate, constant "
                                 "liar for parallel workers), random, qmc (Sobol), cmaes.", SAMPLERS)
    sampler_startup_trials: int = _field(10, "Random trials before TPE / CMA-ES start modelling.")
    pruner: str = _field("median", "Stops unpromising trials on their per-epoch validation macro-F1: median "
                                   "(below the median of earlier trials at the same epoch), hyperband, none.",
                         PRUNERS)
    pruner_startup_trials: int = _field(5, "Median pruner: finished trials before any trial is pruned.")
    pruner_warmup_epochs: int = _field(1, "Median pruner: epochs every trial runs before it may be pruned.")
    gpus: str = _field("", "Start one worker process per GPU, e.g. 0,1,2,3, each with CUDA_VISIBLE_DEVICES "
                           "set to its GPU; 0+1,2+3 gives each worker two GPUs (mirrored). Empty: see --workers.")
    workers: int = _field(0, "Start this many CPU worker processes (CUDA_VISIBLE_DEVICES empty, the CPU threads "
                             "shared out); 0 = this process is the one worker, on the devices it sees.")
    storage: str = _field("", "Where the study lives: empty = the journal file <tune_dir>/<study_name>/journal.log "
                              "(no server; shared by this machine's workers, or by machines sharing the "
                              "directory); a journal file path; or a database URL, e.g. "
                              "postgresql://user@db-host/optuna to run one study from several machines "
                              "(pip install -e '.[postgres]').")
    tune_dir: str = _field("runs/tune", "Study directories go here: <tune_dir>/<study_name>/.")
    timeout: float = _field(0.0, "Seconds after which a worker starts no new trial (0 = none); rerun to go on.")
    heartbeat: int = _field(60, "Seconds between a running trial's heartbeats; a trial of another host whose "
                                "heartbeat is 2 intervals old is failed and retried (same-host workers are "
                                "checked at once by process id).")
    max_retries: int = _field(2, "Times a trial whose worker died (kill, crash, lost machine) is run again.")

    @property
    def study_dir(self) -> pathlib.Path:
        return pathlib.Path(self.tune_dir).expanduser().absolute() / self.study_name

    @property
    def space(self) -> tune_space.SearchSpace:
        return tune_space.SPACES[self.search_space]


_DEFINERS = {bool: absl_flags.DEFINE_bool, int: absl_flags.DEFINE_integer, float: absl_flags.DEFINE_float,
             str: absl_flags.DEFINE_string}


def define_flags(flag_values: absl_flags.FlagValues) -> None:
    for field in dataclasses.fields(Settings):
        help_text, choices = field.metadata["help"], field.metadata["choices"]
        if choices:
            absl_flags.DEFINE_enum(field.name, field.default, choices, help_text, flag_values=flag_values)
        else:
            _DEFINERS[field.type](field.name, field.default, help_text, flag_values=flag_values)


def settings_from_flags(flag_values: absl_flags.FlagValues) -> Settings:
    return Settings(**{field.name: flag_values[field.name].value for field in dataclasses.fields(Settings)})


def parse(argv: list[str]) -> tuple[Config, Settings]:
    """(base config, settings) from arguments without the program name, through a private FlagValues."""
    flag_values = absl_flags.FlagValues()
    flags.define_flags(flag_values)
    define_flags(flag_values)
    flag_values(["trainer.tune", *argv])
    return flags.config_from_flags(flag_values), settings_from_flags(flag_values)


def settings_text(settings: Settings) -> str:
    lines = []
    for field in dataclasses.fields(Settings):
        lines.append(f"--{field.name}={getattr(settings, field.name)}")
    return "\n".join(lines) + "\n"


def gpu_groups(gpus: str) -> list[str]:
    """'0,1' -> ['0', '1']; '0+1,2+3' -> ['0,1', '2,3'] (CUDA_VISIBLE_DEVICES of each worker)."""
    groups = [group.strip() for group in gpus.split(",")] if gpus.strip() else []
    for group in groups:
        if not re.fullmatch(r"\d+(\+\d+)*", group):
            raise TuneError(f"--gpus={gpus}: give GPU indices separated by commas (0,1,2,3), or + within a "
                            "worker's group (0+1,2+3)")
    return [group.replace("+", ",") for group in groups]


def check_settings(settings: Settings) -> None:
    """Raises TuneError on the first tuner flag that cannot work, naming it and what to do."""
    if not settings.study_name:
        raise TuneError("--study_name is empty: name the study, e.g. --study_name=incv3")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", settings.study_name):
        raise TuneError(f"--study_name={settings.study_name}: use letters, digits, '.', '_' and '-' only")
    if settings.n_trials < 1:
        raise TuneError(f"--n_trials={settings.n_trials}: a study needs at least 1 trial")
    if settings.gpus and settings.workers:
        raise TuneError(f"--gpus={settings.gpus} and --workers={settings.workers}: give one of them (--gpus: one "
                        "worker per GPU; --workers: N CPU workers)")
    if settings.workers < 0:
        raise TuneError(f"--workers={settings.workers}: must be 0 (this process) or more")
    gpu_groups(settings.gpus)
    for name in ("heartbeat", "sampler_startup_trials", "pruner_startup_trials", "pruner_warmup_epochs",
                 "max_retries", "timeout"):
        minimum = 1 if name == "heartbeat" else 0
        if getattr(settings, name) < minimum:
            raise TuneError(f"--{name}={getattr(settings, name)}: must be at least {minimum}")
    if settings.sampler == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise TuneError("--sampler=cmaes needs the cmaes package: pip install cmaes") from None


def prepare_base(base: Config, settings: Settings) -> Config:
    """The base config made position-independent (absolute paths, for workers and best.flags), with the
    study's shared feature cache; model_dir is each trial's own."""
    if base.model_dir:
        print(f"tune: note: --model_dir={base.model_dir} is not used; each trial runs in "
              f"{settings.study_dir}/trial_NNNN", flush=True)

    def absolute(path: str) -> str:
        return path if path.startswith("~") else os.path.abspath(path)

    weights = base.weights if base.weights in ("imagenet", "none") else absolute(base.weights)
    return dataclasses.replace(base, data_dir=absolute(base.data_dir), weights=weights, model_dir="",
                               feature_cache_dir=absolute(base.feature_cache_dir or
                                                          str(settings.study_dir / "features")))


def check_base(base: Config, settings: Settings) -> None:
    """ConfigError (one line) unless every value of the space can run on base and the dataset is built."""
    probe = dataclasses.replace(base, model_dir=str(settings.study_dir / "trial_0000"))
    tune_space.check(probe, settings.search_space)
    inputs.dataset_info(probe)


# --- The study. -----------------------------------------------------------------------------------------------

def sampler_seed(seed: int, worker_index: int, existing_trials: int, database: bool) -> int:
    """--seed + the worker's index for a fresh study on one machine (reproducible with one worker); otherwise
    (a resumed study, or a database shared by machines) a seed of this process's own, so that no worker replays
    the random draws another worker or an earlier run already made."""
    if existing_trials == 0 and not database:
        return seed + worker_index
    return zlib.crc32(f"{seed}:{worker_index}:{existing_trials}:{tune_storage.HOST}:{os.getpid()}".encode())


def make_sampler(settings: Settings, seed: int) -> optuna.samplers.BaseSampler:
    """QMC draws point <trial number> of one sequence: the same --seed for every worker and restart."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if settings.sampler == "qmc":
            return optuna.samplers.QMCSampler(seed=seed, scramble=True)
        if settings.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if settings.sampler == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=settings.sampler_startup_trials,
                                                warn_independent_sampling=False)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=settings.sampler_startup_trials,
                                          multivariate=True, group=True, constant_liar=True)


def total_epochs(base: Config, settings: Settings) -> int:
    config = dataclasses.replace(base, **settings.space.fixed)
    return config.phase1_epochs + config.phase2_epochs + config.oversample_epochs


def make_pruner(base: Config, settings: Settings) -> optuna.pruners.BasePruner:
    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=settings.pruner_startup_trials,
                                           n_warmup_steps=settings.pruner_warmup_epochs)
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, total_epochs(base, settings)),
                                              reduction_factor=3)
    return optuna.pruners.NopPruner()


@dataclasses.dataclass
class StudyHandle:
    """An open study and where its pieces are."""

    study: optuna.Study
    heartbeat_dir: pathlib.Path | None  # journal storages only
    storage_label: str  # what optuna-dashboard takes


def _identity(base: Config) -> str:
    """The base flags that define a study: all but this machine's paths and memory budget."""
    return flags.flagfile_text(dataclasses.replace(base, data_dir="", feature_cache_dir="", model_dir="",
                                                   train_cache_gib=Config.train_cache_gib))


def open_study(base: Config, settings: Settings, worker_index: int = 0) -> StudyHandle:
    """Creates or loads the study; refuses one started with other base flags or another search space."""
    storage, heartbeat_dir = tune_storage.open_storage(settings.storage, settings.study_dir, settings.heartbeat,
                                                       settings.max_retries)
    label = (tune_storage.redacted(settings.storage) if "://" in settings.storage else
             str(pathlib.Path(settings.storage).expanduser().absolute() if settings.storage
                 else settings.study_dir / "journal.log"))
    study = optuna.create_study(storage=storage, study_name=settings.study_name, direction="maximize",
                                pruner=make_pruner(base, settings), load_if_exists=True)
    existing = len(study.get_trials(deepcopy=False))
    study.sampler = make_sampler(settings, base.seed if settings.sampler == "qmc" else
                                 sampler_seed(base.seed, worker_index, existing, heartbeat_dir is None))
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise TuneError(f"--study_name={settings.study_name}: {label} holds a study of that name that minimises: "
                        "choose a new --study_name")
    identity = {"search_space": settings.search_space, "base_flags": _identity(base)}
    stored = study.user_attrs
    if "base_flags" not in stored:
        for key, value in identity.items():
            study.set_user_attr(key, value)
    elif {key: stored.get(key) for key in identity} != identity:
        old, new = set(stored["base_flags"].splitlines()), set(identity["base_flags"].splitlines())
        changed = " ".join(sorted(new - old))
        if stored.get("search_space") != settings.search_space:
            changed = f"--search_space={settings.search_space} {changed}"
        raise TuneError(f"study {settings.study_name} in {label} was started with other flags (now {changed.strip()}): "
                        "rerun it with its own flags, or choose a new --study_name")
    return StudyHandle(study, heartbeat_dir, label)


# --- One worker. ----------------------------------------------------------------------------------------------

class _Surplus(Exception):
    """A trial that started beyond the budget (another worker took the last place a moment before)."""


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}"[:1000]


def trial_dir(settings: Settings, trial: optuna.trial.BaseTrial | optuna.trial.FrozenTrial) -> pathlib.Path:
    """trial_NNNN; a retried trial reuses its first attempt's directory, so the trainer resumes that run."""
    if isinstance(trial, optuna.trial.FrozenTrial):
        system_attrs = trial.system_attrs
    else:  # a live Trial keeps them in the storage
        system_attrs = trial.study._storage.get_trial_system_attrs(trial._trial_id)
    history = system_attrs.get("retry_history") or [trial.number]
    return settings.study_dir / f"trial_{history[0]:04d}"


class Worker:
    """Draws trials from the study until the budget is used; each trial is one train.run."""

    def __init__(self, handle: StudyHandle, base: Config, settings: Settings, index: int):
        self.handle, self.study, self.base, self.settings, self.index = handle, handle.study, base, settings, index
        self.current: int | None = None
        self.poll_seconds = min(10.0, settings.heartbeat / 2)

    def objective(self, trial: optuna.Trial) -> float:
        self.current = trial._trial_id
        trial.set_user_attr("worker", tune_storage.worker_tag(self.index))
        if tune_storage.over_budget(self.study, trial.number, self.settings.n_trials):
            trial.set_user_attr("surplus", True)
            raise _Surplus(f"not run: the study already has its {self.settings.n_trials} trials")
        try:
            with tune_storage.heartbeat(self.handle.heartbeat_dir, trial.number, self.settings.heartbeat):
                return self._train(trial)
        except optuna.TrialPruned:
            raise
        except Exception as error:
            trial.set_user_attr("error", _one_line(error))
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("error", "interrupted (Ctrl-C or SIGTERM): queued again for the next start")
            raise
        finally:
            keras.backend.clear_session()
            gc.collect()

    def _train(self, trial: optuna.Trial) -> float:
        params = tune_space.suggest(trial, self.settings.space, self.base)
        run_dir = trial_dir(self.settings, trial)
        config = tune_space.trial_config(self.base, self.settings.space, params, str(run_dir))
        trial.set_user_attr("model_dir", str(run_dir))

        def report(epoch: int, val_macro_f1: float) -> None:
            trial.report(val_macro_f1, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"at epoch {epoch}: validation macro-F1 {val_macro_f1:.4f}")

        resuming = run_dir.exists() and run_dir.name != f"trial_{trial.number:04d}"  # a retry's first attempt
        try:
            results = train.run(config, on_epoch_end=report)
        except optuna.TrialPruned:
            raise
        except Exception as error:
            if not resuming:
                raise
            # A worker killed while Keras wrote a checkpoint leaves a truncated file the resume cannot read: the
            # retry starts the trial over instead of failing for good.
            broken = run_dir.with_name(f"{run_dir.name}.unresumable_{trial.number:04d}")
            run_dir.rename(broken)
            trial.set_user_attr("resume_failed", _one_line(error))
            print(f"tune: trial {trial.number}: resuming {run_dir} failed ({_one_line(error)}); moved it to "
                  f"{broken.name} and started the trial over", flush=True)
            keras.backend.clear_session()
            results = train.run(config, on_epoch_end=report)
        test = results["test"]
        trial.set_user_attr("test_macro_f1", test.get("family_macro_f1", test.get("macro_f1")))
        trial.set_user_attr("epochs", sum(phase["epochs"] for phase in results["phases"].values()))
        return results["best_val_macro_f1"]

    def run(self) -> None:
        settings, study = self.settings, self.study
        deadline = time.monotonic() + settings.timeout if settings.timeout else math.inf
        while True:
            for line in tune_storage.fail_stale_trials(study, self.handle.heartbeat_dir, 2 * settings.heartbeat,
                                                       settings.max_retries):
                print(f"tune: {line}", flush=True)
            step = tune_storage.next_step(study, settings.n_trials)
            if step == "done":
                return
            if time.monotonic() > deadline:
                print(f"tune: worker {self.index}: --timeout={settings.timeout:g} s reached; rerun the command to "
                      "go on", flush=True)
                return
            if step == "wait":  # others' trials may still come back as retries
                time.sleep(self.poll_seconds)
                continue
            self.current = None
            try:
                study.optimize(self.objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
            except KeyboardInterrupt:
                self._requeue_interrupted()
                raise

    def _requeue_interrupted(self) -> None:
        if self.current is None:
            return
        with _signals_ignored():  # a second Ctrl-C must not lose the trial
            trial = self.study._storage.get_trial(self.current)
            if trial.state == TrialState.FAIL:
                tune_storage.retry(self.study, trial, sys.maxsize)  # an interruption is no failure


# --- The command: workers, progress, outputs. -----------------------------------------------------------------

class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (the running trial is queued again) but forwarded to the workers, which a
    terminal's Ctrl-C reaches by itself."""


def _terminate(signum, frame):
    raise Terminated


@contextlib.contextmanager
def _signals_ignored():
    """SIGINT and SIGTERM ignored for a moment (main thread only; others cannot set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {number: signal.signal(number, signal.SIG_IGN) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)


def _die_with_parent() -> None:
    """A worker gets SIGTERM (and requeues its trial) when the command that started it dies, even by kill -9."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:
        raise KeyboardInterrupt


def worker_envs(settings: Settings) -> list[dict[str, str]]:
    """The environment changes of each worker process."""
    if settings.gpus:
        return [{"CUDA_VISIBLE_DEVICES": group} for group in gpu_groups(settings.gpus)]
    threads = str(max(1, (os.cpu_count() or 1) // settings.workers))
    return [{"CUDA_VISIBLE_DEVICES": "", "TF_NUM_INTRAOP_THREADS": os.environ.get("TF_NUM_INTRAOP_THREADS", threads)}
            for _ in range(settings.workers)]


def progress(study: optuna.Study, n_trials: int) -> str:
    budget = tune_storage.counted(study.get_trials(deepcopy=False))[:n_trials]
    states = [trial.state for trial in budget]
    done = sum(state.is_finished() for state in states)
    complete = [trial for trial in budget if trial.state == TrialState.COMPLETE]
    best = max(complete, key=lambda trial: trial.value, default=None)
    text = (f"{done}/{n_trials} trials done: {states.count(TrialState.COMPLETE)} complete, "
            f"{states.count(TrialState.PRUNED)} pruned, {states.count(TrialState.FAIL)} failed; "
            f"{states.count(TrialState.RUNNING)} running")
    return text + (f"; best {best.value:.4f} (trial {best.number})" if best else "")


def spawn_workers(handle: StudyHandle, base: Config, settings: Settings) -> list[str]:
    """Runs the workers to the end, printing progress; returns a line per worker that failed."""
    directory = settings.study_dir / "workers" / f"{tune_storage.HOST}_{os.getpid()}"
    directory.mkdir(parents=True, exist_ok=True)
    flagfile = directory / "tune.flags"
    storage = settings.storage
    if storage and "://" not in storage:
        storage = str(pathlib.Path(storage).expanduser().absolute())
    worker_settings = dataclasses.replace(settings, gpus="", workers=0, storage=storage,
                                          tune_dir=str(settings.study_dir.parent))
    envs = worker_envs(settings)
    # The workers share this machine's memory: each caches training images within its part of the budget.
    worker_base = dataclasses.replace(base, train_cache_gib=base.train_cache_gib / len(envs))
    flagfile.write_text(flags.flagfile_text(worker_base) + settings_text(worker_settings))
    processes, logs = [], []
    for index, env in enumerate(envs):
        log = directory / f"worker_{index}.log"
        logs.append(log)
        with open(log, "ab") as out:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "trainer.tune", f"--flagfile={flagfile}", f"{WORKER_FLAG}{index}"],
                env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, cwd=os.getcwd()))
        print(f"tune: worker {index} (pid {processes[-1].pid}, "
              + " ".join(f"{key}={value!r}" for key, value in env.items()) + f"): log {log}", flush=True)
    last = ""
    try:
        while any(process.poll() is None for process in processes):
            time.sleep(1.0)
            line = progress(handle.study, settings.n_trials)
            if line != last:
                print(f"tune: {line}", flush=True)
                last = line
    except KeyboardInterrupt as interrupt:
        with _signals_ignored():  # the workers requeue their trials, then exit
            for process in processes:
                if isinstance(interrupt, Terminated) and process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        raise
    failures = []
    for index, (process, log) in enumerate(zip(processes, logs)):
        if process.returncode:
            tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])[-600:]
            failures.append(f"worker {index} exited with status {process.returncode} (log {log}): {tail}")
    return failures


def run(base: Config, settings: Settings) -> dict:
    """The whole command: checks, the study, the workers, the outputs. Returns what write_outputs wrote."""
    check_settings(settings)
    base = prepare_base(base, settings)
    check_base(base, settings)
    settings.study_dir.mkdir(parents=True, exist_ok=True)
    handle = open_study(base, settings)
    print(tune_space.describe(settings.search_space), flush=True)
    if settings.search_space == "head" and not base.phase1_cached_features:
        print("tune: note: --search_space=head without --phase1_cached_features runs the frozen backbone over every "
              "image in every epoch of every trial; --phase1_cached_features --augment=none computes the "
              "embeddings once for the whole study", flush=True)
    print(f"tune: study {settings.study_name} in {handle.storage_label}: {progress(handle.study, settings.n_trials)}",
          flush=True)
    for line in tune_storage.fail_stale_trials(handle.study, handle.heartbeat_dir, 2 * settings.heartbeat,
                                               settings.max_retries):
        print(f"tune: {line}", flush=True)
    failures = []
    if settings.gpus or settings.workers:
        failures = spawn_workers(handle, base, settings)
    else:
        Worker(handle, base, settings, 0).run()
    outputs = write_outputs(handle, base, settings)
    for line in failures:
        print(f"tune: {line}", file=sys.stderr, flush=True)
    outputs["worker_failures"] = failures
    return outputs


def run_worker(base: Config, settings: Settings, index: int) -> None:
    """A worker process started by `run` (the hidden --tune_worker flag)."""
    _die_with_parent()
    Worker(open_study(base, settings, index), base, settings, index).run()


# --- Outputs. -------------------------------------------------------------------------------------------------

def best_flags_text(trial: optuna.trial.FrozenTrial, base: Config, settings: Settings) -> tuple[str, pathlib.Path]:
    """A flagfile for trainer.main that retrains the best trial's config in a fresh model_dir."""
    model_dir = settings.study_dir / f"best_run_{trial.number:04d}"
    config = tune_space.trial_config(base, settings.space, trial.params, str(model_dir))
    header = [f"# Best trial {trial.number} of study {settings.study_name}: validation macro-F1 {trial.value:.4f} "
              f"(its run: {trial.user_attrs.get('model_dir', trial_dir(settings, trial))}).",
              f"# Retrain it: python -m trainer.main --flagfile={settings.study_dir / 'best.flags'}",
              "# (a later flag overrides, e.g. --model_dir=runs/final --train_split=train+validation)"]
    return "\n".join(header) + "\n" + flags.flagfile_text(config), model_dir


def _plot(name: str, path: pathlib.Path, plot, study: optuna.Study) -> str:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            axes = plot(study)
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.set_size_inches(10, 6)
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        pyplot.close("all")
        return f"{name}: {path}"
    except Exception as error:
        pyplot.close("all")
        path.unlink(missing_ok=True)
        return f"{name}: not drawn ({_one_line(error)})"


def write_outputs(handle: StudyHandle, base: Config, settings: Settings) -> dict:
    """trials.csv, the plots, best.flags and the printed summary; returns the paths written."""
    from optuna.visualization import matplotlib as plots

    study, directory = handle.study, settings.study_dir
    trials = study.get_trials()
    outputs = {"study_dir": str(directory), "trials_csv": str(directory / "trials.csv")}
    study.trials_dataframe().to_csv(directory / "trials.csv", index=False)
    complete = [trial for trial in trials if trial.state == TrialState.COMPLETE]
    lines = []
    for name, plot in (("history", plots.plot_optimization_history),
                       ("importances", plots.plot_param_importances),
                       ("intermediate", plots.plot_intermediate_values),
                       ("timeline", plots.plot_timeline)):
        path = directory / f"{name}.png"
        if name == "importances" and len(complete) < 2:
            path.unlink(missing_ok=True)
            lines.append(f"importances: not drawn (needs 2 completed trials, the study has {len(complete)})")
            continue
        lines.append(_plot(name, path, plot, study))
        if path.exists():
            outputs[name] = str(path)
    if complete:
        best = study.best_trial
        text, model_dir = best_flags_text(best, base, settings)
        (directory / "best.flags").write_text(text)
        outputs.update(best_flags=str(directory / "best.flags"), best_trial=best.number, best_value=best.value,
                       best_model_dir=str(model_dir))
        lines.append(f"best.flags: {directory / 'best.flags'}  (retrain: python -m trainer.main "
                     f"--flagfile={directory / 'best.flags'})")
    else:
        lines.append("best.flags: not written (no completed trial)")
    lines.append(f"dashboard: optuna-dashboard {handle.storage_label}")
    print(summary_table(study, settings) + "\n" + "\n".join(lines), flush=True)
    return outputs


def summary_table(study: optuna.Study, settings: Settings, top: int = 10) -> str:
    """The study's state counts, its best trials with their parameters, and the failed trials' errors."""
    trials = study.get_trials(deepcopy=False)
    lines = [f"study {settings.study_name}: {progress(study, settings.n_trials)}"]
    ranked = sorted((t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)),
                    key=lambda t: (t.state != TrialState.COMPLETE, -(t.value if t.value is not None else -1)))[:top]
    if ranked:
        names = sorted({name for trial in ranked for name in trial.params})
        header = ["trial", "state", "val_F1", "test_F1", "epochs", "minutes", *names]
        rows = [header]
        for trial in ranked:
            minutes = trial.duration.total_seconds() / 60 if trial.duration else float("nan")
            test = trial.user_attrs.get("test_macro_f1")
            rows.append([str(trial.number), trial.state.name,
                         "-" if trial.value is None else f"{trial.value:.4f}",
                         "-" if test is None else f"{test:.4f}",
                         str(trial.user_attrs.get("epochs", max(trial.intermediate_values, default=0))),
                         f"{minutes:.1f}",
                         *(_format(trial.params.get(name)) for name in names)])
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines += ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows]
    for trial in trials:
        if trial.state == TrialState.FAIL and not trial.user_attrs.get("surplus"):
            lines.append(f"trial {trial.number} FAIL: {trial.user_attrs.get('error', 'no error recorded')}")
    return "\n".join(lines)


def _format(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


# --- Command line. --------------------------------------------------------------------------------------------

_worker_index: int | None = None


def _fail(message: str) -> None:
    flags.fail("trainer.tune", message)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parser with the hidden worker flag taken out and a bad flag reported on one line."""
    global _worker_index
    hidden = [arg for arg in argv if arg.startswith(WORKER_FLAG)]
    if hidden:
        _worker_index = int(hidden[-1][len(WORKER_FLAG):])
    return flags.parse_argv("trainer.tune", [arg for arg in argv if not arg.startswith(WORKER_FLAG)])


def main(argv: list[str]) -> None:
    flags.start_command("trainer.tune", argv)
    signal.signal(signal.SIGTERM, _terminate)
    base, settings = flags.config_from_flags(absl_flags.FLAGS), settings_from_flags(absl_flags.FLAGS)
    try:
        if _worker_index is not None:
            run_worker(base, settings, _worker_index)
            return
        outputs = run(base, settings)
    except (ConfigError, TuneError, tune_storage.StorageError) as error:
        _fail(str(error))
    except KeyboardInterrupt:
        print("tune: interrupted; rerun the same command to resume the study", file=sys.stderr)
        sys.exit(130)
    if outputs["worker_failures"] or "best_flags" not in outputs:
        sys.exit(1)


define_flags(absl_flags.FLAGS)

if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
