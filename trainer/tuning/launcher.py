"""Who runs the trials: this process as the one worker, or worker processes (one per GPU group with
CUDA_VISIBLE_DEVICES pinned, or N CPU workers sharing out the CPU threads), a line per finished trial and their
signals.

A worker process is the same command, `python -m trainer.tune --flagfile=<its flags>`, started with the
environment variable RARE_SPECIES_TUNE_WORKER=<index>: the index reaches the child without a flag (so
--helpfull shows none) and without module state, and the child parses its flags exactly as the user's command
does. A worker dies with the command that started it (SIGTERM on its parent's death, even by kill -9) and
requeues its trial; Ctrl-C reaches every worker of a terminal by itself, SIGTERM is forwarded.
"""

import dataclasses
import os
import pathlib
import signal
import subprocess
import sys
import time

from trainer import cli
from trainer.training.config import Config
from trainer.tuning import storage as storage_lib
from trainer.tuning.settings import Settings, gpu_groups
from trainer.tuning.study import StudyHandle, open_study
from trainer.tuning.worker import Worker, signals_ignored, trial_line

WORKER_ENV = "RARE_SPECIES_TUNE_WORKER"


def worker_index() -> int | None:
    """This process's worker index when the launcher started it, else None."""
    index = os.environ.get(WORKER_ENV)
    return None if index is None else int(index)


def _die_with_parent() -> None:
    """A worker gets SIGTERM (and requeues its trial) when the command that started it dies, even by kill -9."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:
        raise KeyboardInterrupt


def run_child(base: Config, settings: Settings, index: int) -> None:
    """The whole of a worker process: its trials, nothing more (the command that started it writes the outputs)."""
    _die_with_parent()
    Worker(open_study(base, settings, index), base, settings, index).run()


def worker_envs(settings: Settings) -> list[dict[str, str]]:
    """The environment changes of each worker process."""
    if settings.gpus:
        envs = [{"CUDA_VISIBLE_DEVICES": group} for group in gpu_groups(settings.gpus)]
    else:
        threads = str(max(1, (os.cpu_count() or 1) // settings.workers))
        envs = [{"CUDA_VISIBLE_DEVICES": "", "TF_NUM_INTRAOP_THREADS": os.environ.get("TF_NUM_INTRAOP_THREADS",
                                                                                     threads)}
                for _ in range(settings.workers)]
    return [{**env, WORKER_ENV: str(index)} for index, env in enumerate(envs)]


def run_workers(handle: StudyHandle, base: Config, settings: Settings) -> list[str]:
    """Runs the study's trials here, or in worker processes (--gpus, --workers) until they end; returns a line
    per worker process that failed."""
    if not (settings.gpus or settings.workers):
        Worker(handle, base, settings, 0).run()
        return []
    directory = settings.study_dir / "workers" / f"{storage_lib.HOST}_{os.getpid()}"
    directory.mkdir(parents=True, exist_ok=True)
    envs = worker_envs(settings)
    flagfile = _write_worker_flags(directory, base, settings, len(envs))
    processes, logs = [], []
    for env in envs:
        log = directory / f"worker_{env[WORKER_ENV]}.log"
        logs.append(log)
        with open(log, "ab") as out:
            processes.append(subprocess.Popen([sys.executable, "-m", "trainer.tune", f"--flagfile={flagfile}"],
                                              env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
                                              cwd=os.getcwd()))
        shown = " ".join(f"{key}={value!r}" for key, value in env.items() if key != WORKER_ENV)
        print(f"tune: worker {env[WORKER_ENV]} (pid {processes[-1].pid}, {shown}): log {log}", flush=True)
    try:
        _follow(handle, processes)
    except KeyboardInterrupt as interrupt:
        _stop(processes, forward=isinstance(interrupt, cli.Terminated))
        raise
    return [f"worker {index} exited with status {process.returncode} (log {log}): {_tail(log)}"
            for index, (process, log) in enumerate(zip(processes, logs)) if process.returncode]


def _write_worker_flags(directory: pathlib.Path, base: Config, settings: Settings, workers: int) -> pathlib.Path:
    """The workers' flagfile: this command's flags with absolute paths, each worker one of them, and this
    machine's training-image cache budget split between them (they share its memory)."""
    storage = settings.storage
    if storage and "://" not in storage:
        storage = str(pathlib.Path(storage).absolute())
    worker_settings = dataclasses.replace(settings, gpus="", workers=0, storage=storage,
                                          tune_dir=str(settings.study_dir.parent))
    worker_base = dataclasses.replace(base, train_cache_gib=base.train_cache_gib / workers)
    flagfile = directory / "tune.flags"
    flagfile.write_text(cli.flagfile_text(worker_base, worker_settings))
    return flagfile


def _follow(handle: StudyHandle, processes: list[subprocess.Popen]) -> None:
    """Prints a line per trial any worker (of any machine) finishes, until every worker here has exited."""
    shown = {trial.number for trial in handle.study.get_trials(deepcopy=False) if trial.state.is_finished()}
    running = True
    while running:
        time.sleep(1.0)
        running = any(process.poll() is None for process in processes)
        for trial in handle.study.get_trials(deepcopy=False):
            if trial.state.is_finished() and trial.number not in shown and not trial.user_attrs.get("surplus"):
                shown.add(trial.number)
                print(f"tune: {trial_line(handle.study, trial)}", flush=True)


def _stop(processes: list[subprocess.Popen], forward: bool) -> None:
    """Waits for the workers to requeue their trials and exit; forward: send them SIGTERM first (a terminal's
    Ctrl-C has reached them already)."""
    with signals_ignored():
        for process in processes:
            if forward and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _tail(log: pathlib.Path) -> str:
    return " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])[-600:]
