"""The builder's user errors, and how they end `tfds build` in one line while staying exceptions everywhere else.

The builder is a library first: `tfds.load`, `download_and_prepare` in tests and in pipelines must get a
normal exception they can catch, so every mistake in the download or the config is a `BuildError` (a
ValueError) whose message is one line: what is wrong, where (file, row, flag) and what to do.

Under TFDS' command line the same exception would climb through `absl.app.run`, which prints it under its
traceback (~40 lines for a one-line mistake). None of absl's hooks can prevent that: `UsageError` prints the
whole usage text first, an installed `ExceptionHandler` runs only after the traceback is decided and swallows
a `SystemExit` raised inside it, and `sys.excepthook` would change every process that imports the builder.
So `Builder.download_and_prepare` runs inside `one_line_under_tfds_build()`: when (and only when) the call
comes from `tfds build` (its module is on the call stack, in the main process), a `BuildError` is printed as
`tfds build: error: ...` and becomes `SystemExit(2)`, which absl passes through untouched and Python ends
without a traceback. Ctrl-C is no bug either: it ends the command in one line with exit status 130 (TFDS
removes the unfinished dataset folder on its way out). Every other exception, a bug, keeps its traceback.
Under the Beam executor a worker's BuildError reaches the driver inside the runner's own error;
`raised_by_beam_workers` makes it a BuildError again.
"""

import contextlib
import multiprocessing
import re
import sys
from collections.abc import Iterator

PROGRAM = "tfds build"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command ended by Ctrl-C
_TFDS_BUILD_MODULE = "tensorflow_datasets.scripts.cli.build"
# The last line of a worker's BuildError traceback, as a Beam runner quotes it (Beam appends the stage).
_WORKER_BUILD_ERROR = re.compile(rf"^{re.escape(__name__)}\.BuildError: (.+?)(?: \[while running '[^']*'\])*$",
                                 re.MULTILINE)


class BuildError(ValueError):
    """A mistake in the download, the config or the command line, never a bug: str() is one line naming what
    is wrong, where (file, row, flag) and what to do."""


@contextlib.contextmanager
def one_line_under_tfds_build() -> Iterator[None]:
    """Re-raises a BuildError or a KeyboardInterrupt, except under `tfds build`, where either ends the command
    in one line (exit 2, or 130 for Ctrl-C)."""
    try:
        yield
    except BuildError as error:
        _end_in_one_line(f"error: {' '.join(str(error).split())}", EXIT_USAGE)
        raise
    except KeyboardInterrupt:
        _end_in_one_line("interrupted (Ctrl-C); the unfinished dataset folder is removed; run the same command "
                         "again to build it", EXIT_INTERRUPTED)
        raise


def _end_in_one_line(line: str, status: int) -> None:
    """Under `tfds build`: prints `tfds build: LINE` and exits with status; elsewhere returns (to re-raise)."""
    if not _called_by_tfds_build():
        return
    sys.stdout.flush()
    print(f"{PROGRAM}: {line}", file=sys.stderr, flush=True)
    raise SystemExit(status) from None


@contextlib.contextmanager
def raised_by_beam_workers() -> Iterator[None]:
    """Turns a Beam failure caused by a BuildError in a worker back into that BuildError.

    A Beam runner re-raises a worker's exception in the driver as an error of its own (the DirectRunner in
    multi_processing mode: a RuntimeError) whose text holds the worker's traceback, ending in the BuildError
    line with Beam's ` [while running 'STAGE']` appended. Any other failure is re-raised unchanged.
    """
    try:
        yield
    except BuildError:
        raise
    except Exception as error:
        found = _WORKER_BUILD_ERROR.findall(str(error))
        if not found:
            raise
        raise BuildError(found[-1]) from None


def _called_by_tfds_build() -> bool:
    """Whether `tfds build` (tensorflow_datasets/scripts/cli/build.py) is on the call stack of the main process.

    Its pool workers (`--num_processes` > 1) are left out: a worker that exits never answers the pool, which
    would then wait forever; there the exception travels back to the parent as TFDS intends.
    """
    if multiprocessing.parent_process() is not None:
        return False
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__") == _TFDS_BUILD_MODULE:
            return True
        frame = frame.f_back
    return False
