"""Where a study lives, and how its trial budget survives dead workers, restarts and several machines.

Storage: a journal file (optuna's JournalStorage over JournalFileBackend; no server; every worker that shares
the file shares the study) or any database URL (RDBStorage with optuna's heartbeat).

Dead workers: a trial RUNNING whose worker is gone is failed with an `error` user attribute and retried once
more (a WAITING copy with the same parameters, marked as optuna's RetryHeartbeatStaleTrialCallback marks
them), up to --max_retries times. Gone means: its process no longer exists (a worker on this host, known at
once); or, for a worker on another host, no heartbeat for two intervals (database storages: optuna's own
heartbeat; journal files: a file beside the journal that the worker touches every interval).

Budget: --n_trials counts every trial in number order, except a failed trial that was retried (its retry
takes its place) and a trial started beyond the budget by a race between workers (failed as `surplus`), so
the study ends with exactly n_trials COMPLETE, PRUNED or FAIL trials, however many workers and restarts.
"""

import contextlib
import importlib.util
import inspect
import os
import pathlib
import socket
import threading
import time
import warnings

import optuna
from optuna.trial import FrozenTrial, TrialState

HOST = socket.gethostname()


class StorageError(ValueError):
    """A storage that cannot be opened; the message is the one line shown to the user."""


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        import sqlalchemy

        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a database URL: nothing to hide
        return url


def open_storage(spec: str, study_dir: pathlib.Path, heartbeat: int, max_retries: int
                 ) -> tuple[optuna.storages.BaseStorage, pathlib.Path | None]:
    """(storage, directory of the journal's heartbeat files, None for a database).

    spec: empty (the journal file <study_dir>/journal.log), a journal file path, or a database URL
    (postgresql://user@host/db, mysql://..., sqlite:///file.db).
    """
    if "://" not in spec:
        path = pathlib.Path(spec).expanduser().absolute() if spec else study_dir / "journal.log"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            repair_journal(path)
            storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
        except (OSError, ValueError) as error:
            raise StorageError(f"--storage={spec or path}: cannot use the journal file ({error}): give a writable "
                               "path, or a database URL") from None
        return storage, path.with_name(path.name + ".heartbeats")
    url = _with_installed_driver(spec)
    engine_kwargs = {"pool_pre_ping": True}
    if spec.startswith(("postgresql", "mysql")):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    # optuna 4.9 renamed failed_trial_callback (still accepted, deprecated) to heartbeat_stale_trial_callback.
    callback = ("heartbeat_stale_trial_callback"
                if "heartbeat_stale_trial_callback" in inspect.signature(optuna.storages.RDBStorage).parameters
                else "failed_trial_callback")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat, grace_period=2 * heartbeat,
                **{callback: RetryStaleTrial(max_retries)})
    except ImportError as error:
        missing = getattr(error.__cause__, "name", None) or "its driver"
        raise StorageError(f"--storage={redacted(spec)}: the database driver is not installed (no module "
                           f"{missing}): pip install -e '.[postgres]' for PostgreSQL") from None
    except Exception as error:  # sqlalchemy's errors for bad URLs, refused connections, unknown hosts...
        reason = " ".join(str(error).split("\n")[0].split())[:300]
        raise StorageError(f"--storage={redacted(spec)}: cannot open the database ({type(error).__name__}: "
                           f"{reason}): check the URL and that the server is running and reachable") from None
    return storage, None


def _with_installed_driver(url: str) -> str:
    """postgresql://... through psycopg2 (what the [postgres] extra installs) when psycopg 3, SQLAlchemy 2.1's
    default PostgreSQL driver, is not installed."""
    if (url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None
            and importlib.util.find_spec("psycopg2") is not None):
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def repair_journal(path: pathlib.Path) -> None:
    """Drops a half-written last line (a writer killed mid-append), which would corrupt the next append."""
    if not path.exists() or not path.stat().st_size:
        return
    with open(path, "rb") as journal:
        journal.seek(-1, os.SEEK_END)
        if journal.read(1) == b"\n":
            return
    lock = optuna.storages.journal.JournalFileSymlinkLock(str(path))
    while not lock.acquire():
        time.sleep(0.1)
    try:
        data = path.read_bytes()
        keep = data.rfind(b"\n") + 1
        if keep < len(data):
            with open(path, "r+b") as journal:
                journal.truncate(keep)
            print(f"tune: dropped a half-written last record ({len(data) - keep} bytes) from {path}", flush=True)
    finally:
        lock.release()


# --- Workers: who runs a trial, and whether it still does. ---------------------------------------------------

def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (tells a pid from a later reuse of it); None for a
    zombie, a missing process or a system without /proc."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def worker_tag(index: int) -> dict:
    """Stored as the trial's `worker` user attribute."""
    return {"host": HOST, "pid": os.getpid(), "started": _process_start(os.getpid()), "worker": index}


def _alive(worker: dict) -> bool:
    if pathlib.Path("/proc").is_dir():
        started = worker.get("started")
        return started is not None and _process_start(worker["pid"]) == started
    try:
        os.kill(worker["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


@contextlib.contextmanager
def heartbeat(directory: pathlib.Path | None, trial_number: int, interval: float):
    """Touches <directory>/<trial number> every interval while the trial runs (journal storages)."""
    if directory is None:
        yield
        return
    path = directory / str(trial_number)
    directory.mkdir(parents=True, exist_ok=True)
    path.touch()
    stop = threading.Event()

    def beat():
        while not stop.wait(interval):
            with contextlib.suppress(OSError):
                path.touch()

    thread = threading.Thread(target=beat, name=f"heartbeat-trial-{trial_number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        path.unlink(missing_ok=True)


def stale_reason(trial: FrozenTrial, heartbeat_dir: pathlib.Path | None, grace: float) -> str | None:
    """Why a RUNNING trial's worker is taken for dead, or None while it may still be running."""
    worker = trial.user_attrs.get("worker")
    if worker and worker.get("host") == HOST:
        return None if _alive(worker) else f"its worker (pid {worker['pid']} on {HOST}) has exited"
    if heartbeat_dir is None:
        return None  # a database storage: optuna's heartbeat decides
    beat = heartbeat_dir / str(trial.number)
    last = beat.stat().st_mtime if beat.exists() else trial.datetime_start.timestamp()
    age = time.time() - last
    host = worker["host"] if worker else "its host"
    return f"no heartbeat from {host} for {age:.0f} s" if age > grace else None


def fail_trial(study: optuna.Study, trial: FrozenTrial, message: str) -> bool:
    """Fails a RUNNING trial of any worker with an `error` attribute; False when it had already finished."""
    storage = study._storage  # optuna has no public way to change another process's trial
    try:
        storage.set_trial_user_attr(trial._trial_id, "error", message)
        return storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def retry(study: optuna.Study, trial: FrozenTrial, max_retries: int) -> bool:
    """Queues a WAITING copy of a failed trial (same parameters) unless it was retried max_retries times.

    System attributes as optuna's RetryHeartbeatStaleTrialCallback writes them (failed_trial: the first
    attempt's number; retry_history: every attempt before this one), so its helpers and the dashboard read them;
    the run attributes of the dead attempt are not copied."""
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if len(history) > max_retries:
        return False
    study.add_trial(optuna.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs={"retry_of": history[0]}, system_attrs={"failed_trial": history[0], "retry_history": history}))
    return True


class RetryStaleTrial:
    """RDBStorage's heartbeat_stale_trial_callback: `retry` with the tuner's --max_retries."""

    def __init__(self, max_retries: int):
        self.max_retries = max_retries

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        retry(study, trial, self.max_retries)


def fail_stale_trials(study: optuna.Study, heartbeat_dir: pathlib.Path | None, grace: float,
                      max_retries: int) -> list[str]:
    """Fails (and retries) every RUNNING trial whose worker is gone; returns one line per trial failed here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # database storages: heartbeat older than the grace period
    lines = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = stale_reason(trial, heartbeat_dir, grace)
        if reason and fail_trial(study, trial, f"worker died: {reason}"):
            retried = retry(study, study._storage.get_trial(trial._trial_id), max_retries)
            lines.append(f"trial {trial.number} was left RUNNING ({reason}): failed, "
                         + ("queued again" if retried else f"not retried (already tried {max_retries + 1} times)"))
    return lines


# --- The budget. ---------------------------------------------------------------------------------------------

def counted(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that use the budget, in number order (see the module doc)."""
    retried = {number for trial in trials for number in trial.system_attrs.get("retry_history", ())}
    return sorted((trial for trial in trials if trial.number not in retried and not trial.user_attrs.get("surplus")),
                  key=lambda trial: trial.number)


def next_step(study: optuna.Study, n_trials: int) -> str:
    """run: start (or pop) a trial; wait: the budget is used but some of it is still RUNNING (and could come
    back as a retry); done."""
    budget = counted(study.get_trials(deepcopy=False))[:n_trials]
    if len(budget) < n_trials or any(trial.state == TrialState.WAITING for trial in budget):
        return "run"
    if any(trial.state == TrialState.RUNNING for trial in budget):
        return "wait"
    return "done"


def over_budget(study: optuna.Study, trial_number: int, n_trials: int) -> bool:
    """Whether n_trials counted trials precede this one (another worker took the last place first)."""
    before = [trial for trial in counted(study.get_trials(deepcopy=False)) if trial.number < trial_number]
    return len(before) >= n_trials
