"""Terminal output: progress bars and summary tables (rank 0 only)."""
from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

console = Console(stderr=True)
# logs and pipes get no terminal width; rich would squeeze tables into 80 columns and cut numbers
out = Console() if sys.stdout.isatty() else Console(width=160)


LINE_EVERY_S = 30.0  # a progress line this often when stderr is a log, not a terminal


@contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator[Any]:
    """Yields ``advance(n, fields)``; draws a bar with throughput and the latest fields when enabled (on a log or
    pipe: a plain line every ``LINE_EVERY_S`` seconds, so a long step is never silent)."""
    if not enabled:
        yield None
        return
    if not sys.stderr.isatty():
        with _progress_lines(description, total) as advance:
            yield advance
        return
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console, transient=True)
    with bar:
        task = bar.add_task(description, total=total, info="")

        def advance(n: int, fields: dict[str, float]) -> None:
            speed = bar.tasks[task].speed
            info = " ".join(f"{k} {v:.4g}" for k, v in fields.items())
            if speed:
                info += f" {speed:.1f} img/s"
            bar.update(task, advance=n, info=info)

        yield advance


@contextmanager
def _progress_lines(description: str, total: int) -> Iterator[Any]:
    import time

    start = last = time.monotonic()
    done = 0

    def advance(n: int, fields: dict[str, float]) -> None:
        nonlocal done, last
        done += n
        now = time.monotonic()
        if now - last < LINE_EVERY_S:
            return
        last = now
        elapsed = now - start
        left = f", about {elapsed * (total - done) / done:.0f} s left" if 0 < done < total else ""
        info = "".join(f", {k} {v:.4g}" for k, v in fields.items())
        print(f"{description}: {done}/{total} ({100 * done / max(total, 1):.0f}%) in {elapsed:.0f} s{left}{info}",
              file=sys.stderr, flush=True)

    yield advance


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a table to stdout."""
    table = Table(title=title, show_lines=False)
    for c in columns:
        table.add_column(str(c), justify="right" if c not in (columns[0],) else "left")
    digits = [_column_digits([r[i] for r in rows if i < len(r)]) for i in range(len(columns))]
    for r in rows:
        table.add_row(*(fmt(v, digits[i] if i < len(digits) else 2) for i, v in enumerate(r)))
    out.print(table)


def _column_digits(values: Sequence[Any]) -> int:
    """Decimals for a whole column: 2, or enough to show its smallest non-zero value (one format per column)."""
    import math

    small = [abs(v) for v in values if isinstance(v, float) and math.isfinite(v) and v != 0]
    if not small or min(small) >= 0.01:
        return 2
    return min(6, max(2, 1 - math.floor(math.log10(min(small)))))


def fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)
