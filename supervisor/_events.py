"""Delivering events to the ``on_event`` handler, and logging that cannot fail.

An event handler is the application's code (QakeAPI's ``app.emit``, a
metrics hook); a logger is the application's configuration. Neither may break
a task's record or the supervisor's accounting, so both are called through
the guards here: a handler that raises is logged and the next event still
flows; one that hangs is cut off after its bound; a logger that raises falls
back to the standard library's ``logging``.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable
from typing import Any

import anyio

__all__ = ["EventHandler", "EventSink", "debug_enabled", "safe_log"]

EventHandler = Callable[[str, dict[str, Any]], Any]

_fallback = logging.getLogger("supervisor")


def safe_log(logger: Any, level: str, event: str, **fields: Any) -> None:
    """Log through the app's structlog logger; never raise.

    If the configured logger itself raises (a broken processor, a closed
    file), the line goes to the stdlib ``supervisor`` logger instead, with
    the logger's own exception attached, so the outcome is still recorded.
    """
    try:
        getattr(logger, level)(event, **fields)
    except Exception as exc:
        exc_info = fields.pop("exc_info", None)
        _fallback.error(
            "supervisor: the configured structlog logger raised %r while logging "
            "%s %r; fix the logger configuration. Original exception: %r",
            exc,
            event,
            fields,
            exc_info,
        )


def debug_enabled(logger: Any) -> bool:
    """Whether ``logger`` (as configured now) lets debug lines through.

    Understands structlog's filtering loggers (``is_enabled_for``) and
    stdlib-backed ones (``isEnabledFor``); anything else counts as enabled.
    """
    try:
        bound = logger.bind()  # resolves a lazy proxy to the configured logger
        check = getattr(bound, "is_enabled_for", None) or getattr(
            bound, "isEnabledFor", None
        )
        return True if check is None else bool(check(logging.DEBUG))
    except Exception:
        return True


class EventSink:
    """Calls the app's ``on_event(event_name, data)``, sync or async, guarded.

    Async handlers (and sync ones returning an awaitable, like an un-awaited
    ``app.emit``) are awaited in the task that emits, under a shielded
    deadline, so "delivered" means "the handler has completed" and one task's
    events arrive in order. A handler that outlives ``timeout`` is abandoned
    with a warning.
    """

    __slots__ = ("_handler", "_logger", "timeout")

    def __init__(self, handler: EventHandler, logger: Any, timeout: float) -> None:
        self._handler = handler
        self._logger = logger
        self.timeout = timeout

    async def emit(self, event: str, data: dict[str, Any], deadline: float) -> None:
        """Deliver one event; ``deadline`` (``anyio.current_time()`` based) caps it."""
        try:
            result = self._handler(event, data)
            if inspect.isawaitable(result):
                budget = self.timeout
                if deadline != math.inf:
                    budget = max(0.0, min(budget, deadline - anyio.current_time()))
                with anyio.move_on_after(budget, shield=True) as scope:
                    await result
                if scope.cancelled_caught:
                    safe_log(
                        self._logger,
                        "warning",
                        "supervisor:event_handler_timeout",
                        handler=repr(self._handler),
                        event_name=event,
                        task_id=data.get("task_id"),
                        timeout_s=budget,
                    )
        except Exception as exc:
            safe_log(
                self._logger,
                "error",
                "supervisor:event_handler_failed",
                handler=repr(self._handler),
                event_name=event,
                task_id=data.get("task_id"),
                error=str(exc),
                error_type=type(exc).__name__,
                exc_info=exc,
            )
