"""One line per check: its status (ok / warn / FAIL), its name and what was found, with what to do when it is
not ok; the summary line and the exit status of the whole report.

A check is a function returning a Result. `guarded` runs one so that a mistake it finds (a cli.UserError, the
trainer's own one-line errors) or an error it did not foresee becomes its FAIL line instead of ending the
doctor: on a badly set up machine the report is the point, so every check that can run does.
"""

import dataclasses
from collections.abc import Callable, Sequence

from trainer import cli

OK, WARN, FAIL = "ok", "warn", "FAIL"
EXIT_FAILED = 1


@dataclasses.dataclass(frozen=True)
class Result:
    check: str
    status: str
    message: str

    def line(self) -> str:
        return f"{self.status:<5} {self.check:<10} {' '.join(self.message.split())}"


def ok(check: str, message: str) -> Result:
    return Result(check, OK, message)


def warn(check: str, message: str) -> Result:
    return Result(check, WARN, message)


def fail(check: str, message: str) -> Result:
    return Result(check, FAIL, message)


def first_line(error: BaseException) -> str:
    """An exception as `Type: first line of its message`, for a FAIL line (TensorFlow's run to pages)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


def guarded(check: str, function: Callable[..., Result], *args) -> Result:
    """function(*args), or its failure as the check's FAIL line."""
    try:
        return function(*args)
    except cli.UserError as error:
        return fail(check, str(error))
    except Exception as error:  # an unforeseen failure of one check must not hide the others' results
        return fail(check, f"the check itself failed ({first_line(error)}); please report it with this line")


def summary(results: Sequence[Result], program: str) -> str:
    counts = {status: sum(result.status == status for result in results) for status in (FAIL, WARN, OK)}
    verdict = "something FAILs: fix those lines first" if counts[FAIL] else "nothing FAILs"
    return f"{program}: {verdict} ({counts[FAIL]} FAIL, {counts[WARN]} warn, {counts[OK]} ok)"


def exit_status(results: Sequence[Result]) -> int:
    """0 when nothing FAILs, else 1 (a flag the doctor refuses outright is cli's status 2)."""
    return EXIT_FAILED if any(result.status == FAIL for result in results) else 0
