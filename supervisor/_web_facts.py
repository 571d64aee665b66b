"""What the task page shows of a task: public facts only, as safe text.

Kept apart from the ASGI app (:mod:`supervisor.web`) so that the one rule
that matters most, never a task's arguments, keyword arguments or result,
is in one short function that a reviewer can read whole.
"""

from __future__ import annotations

import re
import traceback
from datetime import datetime
from typing import Any

from ._task import BackgroundTask, _safe_str

__all__ = ["MAX_NAME", "format_traceback", "safe_text", "task_facts"]

MAX_NAME = 200
_MAX_MESSAGE = 1000
# C0/C1 controls (but newline and tab), and the bidirectional overrides and
# isolates that make text display in another order than it reads.
_UNPRINTABLE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def task_facts(task: BackgroundTask[Any]) -> dict[str, Any]:
    """One task's public facts; never its arguments, kwargs or result."""
    error = task.error
    return {
        "task_id": task.task_id,
        "name": safe_text(task.name, MAX_NAME),
        "state": task.state.value,
        "attempts": task.attempts,
        "created_at": task.created_at.isoformat(),
        "started_at": _iso(task.started_at),
        "completed_at": _iso(task.completed_at),
        "duration_s": task.duration_s,
        "cancel_reason": safe_text(task.cancel_reason, _MAX_MESSAGE),
        "error_type": None if error is None else type(error).__qualname__,
        "error": None if error is None else safe_text(_safe_str(error), _MAX_MESSAGE),
    }


def format_traceback(error: BaseException) -> str:
    """The traceback as Python prints it (the runner's frames already trimmed)."""
    try:
        return "".join(traceback.format_exception(error)).rstrip("\n")
    except Exception as exc:  # a hostile exception must not break the page
        return f"(the traceback could not be formatted: {type(exc).__name__})"


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def safe_text(value: str | None, limit: int | None) -> str | None:
    """Text safe to show: controls and bidi overrides made visible, length bounded."""
    if value is None:
        return None
    if limit is not None and len(value) > limit:
        value = value[:limit] + "…"
    return _UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], value)
