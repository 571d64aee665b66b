"""What every engine's tasks do: append a fixed-size line to a marks file.

A plain ``os.write`` on an ``O_APPEND`` file is the same few microseconds on
every engine and needs no event loop, so the driver can count completions by
the file's size without asking the engine anything.
"""

from __future__ import annotations

import os

RECORD = 32  # bytes per line, so that lines = size // RECORD


def mark(kind: str, token: str) -> None:
    line = f"{kind} {token} {os.getpid()}".ljust(RECORD - 1)[: RECORD - 1] + "\n"
    fd = os.open(os.environ["BENCH_MARKS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def redis_url() -> str:
    return os.environ["BENCH_REDIS_URL"]


def tuned() -> bool:
    """Whether to shorten the engine's crash-recovery timeouts (``--tuned``)."""
    return os.environ.get("BENCH_TUNED") == "1"
