"""Helpers shared by the benchmarks: the production-like logger, stats, tables.

The benchmarks compare the supervisor with what people use today, so the
supervisor runs the way it would in production: structlog configured by the
application, filtered at WARNING (so a successful task's debug line costs a
level check, not a JSON render), writing to ``/dev/null``, no event sink.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import statistics
from collections.abc import Sequence

import structlog

__all__ = [
    "configure_production_logging",
    "fmt_num",
    "fmt_ratio",
    "free_port",
    "markdown_table",
    "median",
    "verdict",
]


def configure_production_logging() -> None:
    """Configure structlog as a production app would: JSON, WARNING and up, no I/O cost.

    ``cache_logger_on_first_use`` matters: without it every log call through
    the supervisor's module-level lazy proxy would rebuild the bound logger.
    """
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        processors=[structlog.processors.JSONRenderer()],
        logger_factory=structlog.WriteLoggerFactory(
            file=open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
        ),
        cache_logger_on_first_use=True,
    )


def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values (so a missing contender shows as ``-``)."""
    return statistics.median(values) if values else float("nan")


def fmt_num(value: float | None, digits: int = 1) -> str:
    """A number for a table cell: thousands separators, ``-`` when unknown."""
    if value is None or math.isnan(value):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def fmt_ratio(value: float | None, reference: float | None) -> str:
    """``value / reference`` as ``1.23x``, ``-`` when either is unknown or zero."""
    if not value or not reference or math.isnan(value) or math.isnan(reference):
        return "-"
    return f"{value / reference:.2f}x"


def verdict(ok: bool | None) -> str:
    """PASS / MISS / n/a for the targets line."""
    if ok is None:
        return "n/a"
    return "PASS" if ok else "MISS"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table, columns padded for reading in a terminal."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            "-" * (w + 2) if i == 0 else "-" * (w + 1) + ":"
            for i, w in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
