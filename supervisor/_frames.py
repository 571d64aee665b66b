"""Tracebacks that show the task's code, not the supervisor's or the loop's.

A failed task's traceback is what an operator reads first (in the
``task:failed`` line, in ``python -m supervisor failures``). The runner's own
frames at its head, and the ~35 lines of anyio/asyncio/trio internals and the
chained cancellation behind a timeout, only hide where the task was.
"""

from __future__ import annotations

import contextvars
import os
import threading
from types import TracebackType

import anyio

__all__ = ["timeout_error", "user_frames"]

_OUR_DIR = os.path.dirname(__file__) + os.sep
_LIBRARY_DIRS = tuple(
    os.path.dirname(module.__file__) + os.sep
    for module in (anyio, contextvars, threading)
    if module.__file__
)
# The event loops' packages, by name (trio and outcome are optional, so they
# are not imported to find their paths): trio re-raises a cancellation
# through ``outcome``'s ``unwrap``, which is no more the task's than trio is.
_LOOP_PACKAGES = tuple(
    f"{os.sep}{name}{os.sep}" for name in ("asyncio", "trio", "outcome")
)


def user_frames(tb: TracebackType | None) -> TracebackType | None:
    """Drop the runner's own frames from the head of a task's traceback."""
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_OUR_DIR):
        tb = tb.tb_next
    return tb


def timeout_error(name: str, timeout: float, exc: BaseException) -> TimeoutError:
    """The ``TimeoutError`` of a task past its deadline, with the task's frames only.

    What anyio raises carries the event loop's and anyio's own frames and a
    chained cancellation (about 35 lines per failure); the operator needs
    where the task was when time ran out.
    """
    error = TimeoutError(f"task {name!r} exceeded its {timeout} s timeout")
    source = exc.__context__ if exc.__context__ is not None else exc
    frames: list[TracebackType] = []
    tb = source.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not filename.startswith((_OUR_DIR, *_LIBRARY_DIRS)) and not any(
            package in filename for package in _LOOP_PACKAGES
        ):
            frames.append(tb)
        tb = tb.tb_next
    rebuilt: TracebackType | None = None
    for frame_tb in reversed(frames):
        rebuilt = TracebackType(
            rebuilt, frame_tb.tb_frame, frame_tb.tb_lasti, frame_tb.tb_lineno
        )
    error.__suppress_context__ = True
    return error.with_traceback(rebuilt)
