"""What every benchmark shares: the one table format (Markdown, first column left-aligned, others right) and
the timing of batches in wall and CPU seconds."""

import resource
import time


def markdown(rows: list[tuple[str, ...]]) -> str:
    """rows[0] is the header; every cell is already a string."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def line(row):
        return "| " + " | ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                                 for i, (cell, width) in enumerate(zip(row, widths))) + " |"

    return "\n".join([line(rows[0]), "|" + "|".join("-" * (width + 2) for width in widths) + "|",
                      *map(line, rows[1:])])


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its finished child processes so far."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_batches(batches, warmup: int, timed: int, batch_size: int, total: list) -> None:
    """Adds the wall and CPU seconds and the images of `timed` batches, after `warmup` untimed ones, to total."""
    for _ in range(warmup):
        next(batches)
    start, cpu = time.perf_counter(), cpu_seconds()
    for _ in range(timed):
        next(batches)
    total[0] += time.perf_counter() - start
    total[1] += cpu_seconds() - cpu
    total[2] += timed * batch_size
