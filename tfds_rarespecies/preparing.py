"""Turns every downloaded file into its stored JPEG once, in parallel over all cores.

The per-file step (`prepare`) is a pure function of (file, size, quality): it reads the bytes, checks the md5
the licenses file gives and decodes with the one decoder (imaging.prepare). The local executor maps
`prepare_one` (prepare, then write the re-encoded JPEG to a scratch folder) over a process pool; the Beam
executor calls `prepare` in a Beam stage. The hashes feed the split assignment, which needs all of them
before any example is written.
"""

import concurrent.futures
import contextlib
import dataclasses
import errno
import functools
import hashlib
import multiprocessing
import os
import pathlib
import signal
import stat
import sys
import threading
import types
from typing import Iterable, Iterator

import tqdm

from tfds_rarespecies import imaging


class NotRegularFile(OSError):
    """A directory, FIFO, device or socket where an image file was expected."""


# Reasons for a file that cannot be read at all (imaging.REASONS are those of bytes that do not decode);
# "read_error" is any other I/O error. A dangling symlink is "missing_target" as well.
READ_REASONS = {FileNotFoundError: "missing_target", PermissionError: "permission_denied",
                NotRegularFile: "not_a_file"}


@dataclasses.dataclass(frozen=True)
class Job:
    file_name: str
    source: str
    target: str
    md5: str = ""


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What became of one file: `reason` is empty when its JPEG was written to the job's target."""

    file_name: str
    reason: str = ""
    detail: str = ""
    width: int = 0
    height: int = 0
    content_sha256: str = ""
    phash: str = ""

    @property
    def ok(self) -> bool:
        return not self.reason


def prepare(job: Job, short_side: int, quality: int, min_side: int = 1) -> tuple[Outcome, bytes]:
    """The per-file work, a pure function of (file, sizes, quality) that both executors run: reads, checks,
    decodes, orients, converts to RGB, resizes, encodes and hashes one file; (its Outcome, its stored JPEG or
    b"" when it failed). Never raises for a bad, unreadable, too small or unencodable file.

    A failure is recorded as a reason word (READ_REASONS, imaging.REASONS) and a detail made of our own words
    and numbers, never of the file's bytes.
    """
    try:
        data = _read_regular_file(pathlib.Path(job.source))
    except OSError as exc:
        return Outcome(job.file_name, *_read_failure(exc, pathlib.Path(job.source))), b""
    if job.md5 and hashlib.md5(data).hexdigest() != job.md5:
        return Outcome(job.file_name, "md5_mismatch",
                       f"md5 {hashlib.md5(data).hexdigest()} != licenses.csv md5 {job.md5}"), b""
    try:
        prepared = imaging.prepare(data, short_side, quality, min_side)
    except imaging.DecodeError as exc:
        return Outcome(job.file_name, exc.reason, str(exc)), b""
    return Outcome(job.file_name, width=prepared.width, height=prepared.height,
                   content_sha256=prepared.content_sha256, phash=prepared.phash), prepared.jpeg


def prepare_one(job: Job, short_side: int, quality: int, min_side: int = 1) -> Outcome:
    """`prepare`, then the JPEG written to the job's target (the local executor's scratch folder). Only the
    write may raise: the scratch folder is the build's, and a full disk is no fault of one file."""
    outcome, jpeg = prepare(job, short_side, quality, min_side)
    if outcome.ok:
        pathlib.Path(job.target).write_bytes(jpeg)
    return outcome


def _read_regular_file(path: pathlib.Path) -> bytes:
    """The bytes of a regular file (or of a symlink's target); anything else (a folder, FIFO, device) raises
    NotRegularFile before it is opened: opening a FIFO blocks, and reading a device may never end."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO, device or socket"
        raise NotRegularFile(errno.EINVAL, f"{kind}, not a file")
    return path.read_bytes()


def _read_failure(exc: OSError, path: pathlib.Path) -> tuple[str, str]:
    """(reason, detail) of a file that could not be read; detail is the operating system's word for it."""
    if isinstance(exc, FileNotFoundError) and path.is_symlink():
        return "missing_target", "a symlink whose target does not exist"
    for kind, reason in READ_REASONS.items():
        if isinstance(exc, kind):
            return reason, exc.strerror or type(exc).__name__
    return "read_error", exc.strerror or type(exc).__name__


def prepare_all(jobs: Iterable[Job], short_side: int, quality: int, workers: int = 0,
                min_side: int = 1) -> Iterator[Outcome]:
    """Yields one Outcome per job, in job order, with a progress bar.

    workers=0 uses every core. The pool uses the "spawn" start method: forking a process that has
    TensorFlow's thread pools running is unsafe. Ctrl-C reaches the workers too (one process group): they
    start with it ignored, and the parent cancels what is still queued, so an interrupt ends in the parent's
    one line, not in a traceback per worker, and does not wait for the queued files to be decoded.
    """
    jobs = list(jobs)
    workers = worker_count(workers)
    step = functools.partial(prepare_one, short_side=short_side, quality=quality, min_side=min_side)
    progress = functools.partial(tqdm.tqdm, total=len(jobs), desc="Decoding and resizing images", unit=" images",
                                 disable=None)
    if workers == 1 or len(jobs) < 2:
        yield from progress(map(step, jobs))
        return
    context = multiprocessing.get_context("spawn")
    # Small chunks (~1/32 of a worker's share, at most 64 files) keep both cores busy to the last file.
    chunk = max(1, min(64, len(jobs) // (workers * 32)))
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        try:
            with _main_module_hidden(), _workers_ignore_interrupts():  # map starts the workers as it submits
                outcomes = pool.map(step, jobs, chunksize=chunk)
            yield from progress(outcomes)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


@contextlib.contextmanager
def _workers_ignore_interrupts():
    """Ignores Ctrl-C while the pool starts its workers, which inherit that: a handler set inside a worker
    would come too late for a Ctrl-C during its start-up (a traceback per worker). An interrupt in those
    milliseconds is lost; the parent handles every later one. Only the main thread may set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def worker_count(workers: int) -> int:
    """The processes prepare_all runs for a config's num_workers: 0 means every core."""
    return workers or os.cpu_count() or 1


@contextlib.contextmanager
def _main_module_hidden():
    """Lets spawned workers start without re-importing the parent's __main__.

    A spawned process imports the parent's main module before its first task (in case a pickled function lives
    there). Under `tfds build` that is TFDS' command line, and in a training or benchmark script it is the
    script, and either imports TensorFlow: about 5 s per worker, 7-9 s on two busy cores, as long as decoding
    600 EOL files takes. The workers only run prepare_one (this module and Pillow), so while they start,
    __main__ is an empty module, which multiprocessing does not re-import.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main
