"""Where a study lives, and how its trial budget survives dead workers, restarts and several machines.

Storage: a journal file (optuna's JournalStorage over JournalFileBackend; no server; every worker that shares
the file shares the study) or any database URL (RDBStorage with optuna's heartbeat).

Dead workers: a trial RUNNING whose worker is gone is failed (`study.tell` by trial number, which works for
another process's trial) and queued again (a WAITING copy with the same parameters, see `requeue`), up to
--max_retries times. Gone means: its process no longer exists (a worker on this host, known at once); or, for a
worker on another host, no heartbeat for two intervals. Database storages keep optuna's own heartbeat. Journal
files get one of the tuner's, a file beside the journal that the worker touches every interval, only because
optuna's JournalStorage has none: in optuna 5.1 it derives from BaseStorage alone, not BaseHeartbeat, so
`optuna.storages.fail_stale_trials` passes over it.

Why a trial failed from outside its own process is the study's user attribute `trial_NNNN_error` (`trial_error`
reads it beside a trial's own `error`): optuna's public API sets user attributes only through the trial's own
Trial object, and those of a finished trial not at all.

Budget: --n_trials counts every trial in number order, except a failed trial that was retried (its retry
takes its place) and a trial started beyond the budget by a race between workers (failed as `surplus`), so
the study ends with exactly n_trials COMPLETE, PRUNED or FAIL trials, however many workers and restarts.
optuna.study.MaxTrialsCallback cannot keep it: it counts trials by state, which includes those two kinds.
"""

import contextlib
import dataclasses
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

from trainer import cli

HOST = socket.gethostname()
# Renamed from RetryFailedTrialCallback (still there, deprecated) in optuna 4.9; its helpers read retry records.
RETRIES = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback


class StorageError(cli.UserError):
    """A storage that cannot be opened; the message is the one line shown to the user."""


class StaleTrialCallback:
    """RDBStorage's heartbeat_stale_trial_callback: a trial optuna's heartbeat failed is recorded and retried
    like any other dead worker's trial; its line waits in `lines` for fail_stale_trials to return."""

    def __init__(self, grace: float, max_retries: int):
        self.grace, self.max_retries, self.lines = grace, max_retries, []

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.lines.append(_failed_line(study, trial, f"no heartbeat for over {self.grace:g} s", self.max_retries))


@dataclasses.dataclass(frozen=True)
class Storage:
    """An opened storage and how the liveness of its trials is known."""

    optuna_storage: optuna.storages.BaseStorage
    label: str  # what optuna-dashboard takes; a database URL without its password
    heartbeat_dir: pathlib.Path | None  # journal files: the heartbeat files; None for a database
    grace: float  # seconds without a heartbeat after which a trial of another host is taken for dead
    max_retries: int
    on_stale: StaleTrialCallback | None = None  # databases: optuna's heartbeat calls it


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        import sqlalchemy

        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a database URL: nothing to hide
        return url


def open_storage(spec: str, study_dir: pathlib.Path, heartbeat: int, max_retries: int) -> Storage:
    """spec: empty (the journal file <study_dir>/journal.log), a journal file path, or a database URL
    (postgresql://user@host/db, mysql://..., sqlite:///file.db)."""
    if "://" not in spec:
        path = pathlib.Path(spec).absolute() if spec else study_dir / "journal.log"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            repair_journal(path)
            journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
        except (OSError, ValueError) as error:
            raise StorageError(f"--storage={spec or path}: cannot use the journal file ({error}): give a writable "
                               "path, or a database URL") from None
        return Storage(journal, str(path), path.with_name(path.name + ".heartbeats"), 2 * heartbeat, max_retries)
    on_stale = StaleTrialCallback(2 * heartbeat, max_retries)
    return Storage(_open_database(spec, heartbeat, on_stale), redacted(spec), None, 2 * heartbeat, max_retries,
                   on_stale)


def _open_database(url: str, heartbeat: int, on_stale: StaleTrialCallback) -> optuna.storages.RDBStorage:
    engine_kwargs = {"pool_pre_ping": True}
    if url.startswith(("postgresql", "mysql")):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    # optuna 4.9 renamed failed_trial_callback (still accepted, deprecated) to heartbeat_stale_trial_callback.
    callback = ("heartbeat_stale_trial_callback"
                if "heartbeat_stale_trial_callback" in inspect.signature(optuna.storages.RDBStorage).parameters
                else "failed_trial_callback")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(_with_installed_driver(url), engine_kwargs=engine_kwargs,
                                              heartbeat_interval=heartbeat, grace_period=2 * heartbeat,
                                              **{callback: on_stale})
    except ImportError as error:
        missing = getattr(error.__cause__, "name", None) or "its driver"
        raise StorageError(f"--storage={redacted(url)}: the database driver is not installed (no module "
                           f"{missing}): pip install -e '.[postgres]' for PostgreSQL") from None
    except Exception as error:  # sqlalchemy's errors for bad URLs, refused connections, unknown hosts...
        reason = " ".join(str(error).split("\n")[0].split())[:300]
        raise StorageError(f"--storage={redacted(url)}: cannot open the database ({type(error).__name__}: "
                           f"{reason}): check the URL and that the server is running and reachable") from None


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


def frozen_trial(study: optuna.Study, number: int) -> FrozenTrial:
    """The stored trial of that number (a live Trial shows neither its state nor its system attributes)."""
    return next(trial for trial in study.get_trials(deepcopy=False) if trial.number == number)


@contextlib.contextmanager
def heartbeat(storage: Storage, study: optuna.Study, trial_number: int, interval: float):
    """Beats every interval while the trial runs: a database's own heartbeat, or a journal's heartbeat file."""
    if storage.heartbeat_dir is None:
        # Study.optimize records optuna's heartbeat; an ask-and-tell worker records it through the RDBStorage
        # it opened, finding the trial's id in that storage by study name and trial number.
        database = storage.optuna_storage
        trial_id = database.get_trial_id_from_study_id_trial_number(
            database.get_study_id_from_name(study.study_name), trial_number)
        beat, done = (lambda: database.record_heartbeat(trial_id)), (lambda: None)
    else:
        path = storage.heartbeat_dir / str(trial_number)
        storage.heartbeat_dir.mkdir(parents=True, exist_ok=True)
        beat, done = path.touch, (lambda: path.unlink(missing_ok=True))
    beat()
    stop = threading.Event()

    def beat_until_stopped():
        while not stop.wait(interval):
            with contextlib.suppress(Exception):  # a missed beat (full disk, lost connection) is tried again
                beat()

    thread = threading.Thread(target=beat_until_stopped, name=f"heartbeat-trial-{trial_number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        done()


def stale_reason(trial: FrozenTrial, storage: Storage) -> str | None:
    """Why a RUNNING trial's worker is taken for dead, or None while it may still be running."""
    worker = trial.user_attrs.get("worker")
    if worker and worker.get("host") == HOST:
        return None if _alive(worker) else f"its worker (pid {worker['pid']} on {HOST}) has exited"
    if storage.heartbeat_dir is None:
        return None  # a database storage: optuna's heartbeat decides
    beat = storage.heartbeat_dir / str(trial.number)
    last = beat.stat().st_mtime if beat.exists() else trial.datetime_start.timestamp()
    age = time.time() - last
    host = worker["host"] if worker else "its host"
    return f"no heartbeat from {host} for {age:.0f} s" if age > storage.grace else None


def fail_trial(study: optuna.Study, number: int) -> FrozenTrial | None:
    """Fails a RUNNING trial of any worker; None when it had finished (another worker may have failed it)."""
    try:
        return study.tell(number, state=TrialState.FAIL)
    except (ValueError, optuna.exceptions.UpdateFinishedTrialError):  # told before / while this tells
        return None


def _error_key(number: int) -> str:
    return f"trial_{number:04d}_error"


def record_error(study: optuna.Study, number: int, message: str) -> None:
    """The error of a trial failed from outside its process, as the study's user attribute (see the module doc)."""
    study.set_user_attr(_error_key(number), message)


def trial_error(study: optuna.Study, trial: FrozenTrial) -> str | None:
    """The trial's error: its own `error` attribute, or the study's record of why another process failed it."""
    return trial.user_attrs.get("error") or study.user_attrs.get(_error_key(trial.number))


def retry_history(trial: FrozenTrial) -> list[int]:
    """The numbers of the earlier attempts of a retried trial, first attempt first; [] for a first attempt."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RETRIES.retry_history(trial)


def requeue(study: optuna.Study, trial: FrozenTrial, max_retries: int | None) -> bool:
    """Queues a WAITING copy of a failed trial (same parameters) unless it was retried max_retries times
    (None: no limit).

    The retry records are written as optuna's RetryHeartbeatStaleTrialCallback writes them (failed_trial: the
    first attempt's number; retry_history: every attempt before this one), so its helpers and the dashboard read
    them. Not that callback itself: it copies the dead attempt's user attributes, and by the copied `worker`
    another worker would take the retry, the moment it is popped, for the dead attempt and fail it again."""
    history = [*retry_history(trial), trial.number]
    if max_retries is not None and len(history) > max_retries:
        return False
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        system_attrs={"failed_trial": history[0], "retry_history": history}))
    return True


def _failed_line(study: optuna.Study, trial: FrozenTrial, reason: str, max_retries: int) -> str:
    """Records why the (already failed) trial died, queues it again, and says so."""
    record_error(study, trial.number, f"worker died: {reason}")
    retried = requeue(study, trial, max_retries)
    return (f"trial {trial.number} was left RUNNING ({reason}): failed, "
            + ("queued again" if retried else f"not retried (already tried {max_retries + 1} times)"))


def fail_stale_trials(study: optuna.Study, storage: Storage) -> list[str]:
    """Fails (and retries) every RUNNING trial whose worker is gone; returns one line per trial failed here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # database storages: heartbeat older than the grace period
    lines = []
    if storage.on_stale:
        lines, storage.on_stale.lines = storage.on_stale.lines, []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = stale_reason(trial, storage)
        failed = fail_trial(study, trial.number) if reason else None
        if failed:
            lines.append(_failed_line(study, failed, reason, storage.max_retries))
    return lines


# --- The budget. ---------------------------------------------------------------------------------------------

def counted(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that use the budget, in number order (see the module doc)."""
    retried = {number for trial in trials for number in retry_history(trial)}
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
