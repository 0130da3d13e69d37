"""Timing and printing shared by the bench/ scripts that print a table of figures.

Scripts in bench/ import this as ``table`` (bench/ is on sys.path when a script there runs).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence


def median_time(action: Callable[[], object], repeat: int) -> float:
    """Seconds ``action`` takes: the median of ``repeat`` runs after one warm-up."""
    action()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def print_table(rows: Sequence[tuple[str, str]]) -> None:
    """``measure  value`` rows, the names padded to one column."""
    width = max(len(name) for name, _ in rows)
    print(f"{'measure':<{width}}  value")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def print_grid(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns of figures under ``headers``: the first column left-aligned, the rest right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first, *rest = (str(cell) for cell in cells)
        return "  ".join([first.ljust(widths[0]), *(cell.rjust(width) for cell, width in zip(rest, widths[1:],
                                                                                            strict=True))])

    print(line(headers))
    for row in rows:
        print(line(row))
