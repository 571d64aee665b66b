"""One emission path: each transition is one frozen :class:`TaskEvent`, emitted once.

Everything that reports a task's life is a *listener* of that record: the
structlog line (:class:`LogListener`), the app's ``on_event(name, data)``
handler (:class:`HandlerListener`), :func:`supervisor.testing.capture_events`
and the pytest plugin (added with :meth:`Supervisor.add_listener`). So a log
line and an event can never disagree, and a new sink (metrics, tracing) is
one more listener, not one more hand-written call at every transition.

Listeners are the application's code or configuration, and none of them may
break a task's record or the supervisor's accounting:

* a listener added with :meth:`~Supervisor.add_listener` that raises is
  logged once and removed, as trio does with its instruments;
* the ``on_event`` handler is the app's own sink (QakeAPI's ``app.emit``):
  SPEC 3 wants later events to still flow after it raises, so each failure
  is logged and the handler stays; an async one is awaited in the task that
  emits, under a deadline, so "delivered" means "the handler has completed";
* a logger that raises falls back to the standard library's ``logging``.

The hot path pays for none of this when nobody listens: the runner asks
:attr:`Emitter.quiet` and :attr:`Emitter.log_success` before it builds a
record, and success lines are built only when the app's logger would print
them.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from ._records import made_here

if TYPE_CHECKING:
    from ._task import TaskState

__all__ = [
    "Emitter",
    "EventHandler",
    "HandlerListener",
    "Listener",
    "LogListener",
    "TaskEvent",
    "level_enabled",
    "make_event",
    "safe_log",
]

EventHandler = Callable[[str, dict[str, Any]], Any]

_fallback = logging.getLogger("supervisor")

_LEVEL_NUMBERS = {"debug": logging.DEBUG, "info": logging.INFO}


@made_here("listeners receive them (Supervisor.add_listener)")
@attrs.frozen
class TaskEvent:
    """One transition of one task, as every listener receives it.

    ``event`` is the name (``task:started``, ``task:succeeded``,
    ``task:failed``, ``task:cancelled``, ``task:retrying``, and for services
    ``service:restarting`` and ``service:gave_up``). ``error`` is the
    exception itself, for failures and retries. ``details`` holds the few
    keys particular to one kind of event, flat: ``reason`` and ``abandoned``
    for cancellations, ``retry_in_s`` for retries, the restart counts for
    services. Records are made by the supervisor, never by callers.
    """

    event: str
    task_id: str
    task_name: str
    supervisor: str
    state: TaskState
    attempt: int
    duration_s: float | None
    error: BaseException | None = None
    details: Mapping[str, Any] = attrs.field(factory=dict)

    @classmethod
    def _create(cls, *args: Any) -> TaskEvent:  # replaced by made_here
        raise NotImplementedError

    def as_data(self) -> dict[str, Any]:
        """The plain dict an ``on_event(name, data)`` handler receives (SPEC 3)."""
        return self._flat(name="name")

    def log_fields(self) -> dict[str, Any]:
        """The flat keys of the structlog line (SPEC 3); the caller adds exc_info."""
        return self._flat(name="task_name", duration_s=self.duration_s)

    def _flat(self, *, name: str, **extra: Any) -> dict[str, Any]:
        # The event data says "name", the log line "task_name" (SPEC 3).
        fields: dict[str, Any] = {
            "task_id": self.task_id,
            name: self.task_name,
            "supervisor": self.supervisor,
            "state": self.state.value,
            "attempt": self.attempt,
            **extra,
            **self.details,
        }
        if self.error is not None:
            fields["error"] = _describe(self.error)
            fields["error_type"] = type(self.error).__name__
        return fields


def _describe(exc: BaseException) -> str:
    """``str(exc)``, even for an exception whose ``__str__`` raises."""
    try:
        return str(exc)
    except Exception as inner:
        return f"<str() of {type(exc).__name__} raised {type(inner).__name__}>"


Listener = Callable[[TaskEvent], object]


def make_event(*fields: Any) -> TaskEvent:
    """A :class:`TaskEvent`, positionally (the runner's hot path)."""
    return TaskEvent._create(*fields)


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
        try:
            _fallback.error(
                "supervisor: the configured structlog logger raised %r while "
                "logging %s %r; fix the logger configuration. Original "
                "exception: %r",
                exc,
                event,
                fields,
                exc_info,
            )
        except Exception:  # a repr that raises: keep the outcome at least
            _fallback.error("supervisor: logger failed while logging %s", event)


def level_enabled(logger: Any, level: str) -> bool:
    """Whether ``logger`` (as configured now) lets lines at ``level`` through.

    Understands structlog's filtering loggers (``is_enabled_for``) and
    stdlib-backed ones (``isEnabledFor``); anything else counts as enabled.
    """
    try:
        bound = logger.bind()  # resolves a lazy proxy to the configured logger
        check = getattr(bound, "is_enabled_for", None) or getattr(
            bound, "isEnabledFor", None
        )
        return True if check is None else bool(check(_LEVEL_NUMBERS[level]))
    except Exception:
        return True


class LogListener:
    """Renders events as the structlog lines of SPEC 3: one per transition that matters.

    Failures at error (with ``exc_info``), cancellations and retries at
    warning, success at the app's ``success_level`` (debug by default);
    ``task:started`` is an event only, not a line.
    """

    __slots__ = ("_levels", "logger", "success_level")

    def __init__(self, logger: Any, success_level: str) -> None:
        self.logger = logger
        self.success_level = success_level
        self._levels = {
            "task:succeeded": success_level,
            "task:failed": "error",
            "task:cancelled": "warning",
            "task:retrying": "warning",
            "service:restarting": "warning",
            "service:gave_up": "error",
        }

    def __call__(self, event: TaskEvent) -> None:
        level = self._levels.get(event.event)
        if level is None:
            return
        fields = event.log_fields()
        if event.error is not None and event.event in _WITH_TRACEBACK:
            fields["exc_info"] = event.error
        safe_log(self.logger, level, event.event, **fields)


# One traceback per failure: the terminal line carries it, and so does each
# crash of a service that is restarted (the next crash is another failure).
_WITH_TRACEBACK = frozenset({"task:failed", "service:restarting"})


class HandlerListener:
    """The app's ``on_event(event_name, data)``, sync or async, guarded.

    Async handlers (and sync ones returning an awaitable, like an un-awaited
    ``app.emit``) are awaited in the task that emits, under a shielded
    deadline, so delivery means the handler has completed and one task's
    events arrive in order. A handler that outlives ``timeout`` is abandoned
    with a warning; one that raises is logged and still gets the next event.
    """

    __slots__ = ("_logger", "handler", "timeout")

    def __init__(self, handler: EventHandler, logger: Any, timeout: float) -> None:
        self.handler = handler
        self._logger = logger
        self.timeout = timeout

    async def deliver(self, event: TaskEvent, deadline: float) -> None:
        """Deliver one event; ``deadline`` (``anyio.current_time()`` based) caps it."""
        try:
            result = self.handler(event.event, event.as_data())
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
                        handler=_safe_repr(self.handler),
                        event_name=event.event,
                        task_id=event.task_id,
                        timeout_s=budget,
                    )
        except BaseException as exc:
            if not _handler_fault(exc):
                raise
            safe_log(
                self._logger,
                "error",
                "supervisor:event_handler_failed",
                handler=_safe_repr(self.handler),
                event_name=event.event,
                task_id=event.task_id,
                error=_describe(exc),
                error_type=type(exc).__name__,
                exc_info=exc,
            )


def _handler_fault(exc: BaseException) -> bool:
    """Whether ``exc`` is the handler's own fault rather than a real cancellation.

    A handler that raises a bare ``asyncio.CancelledError`` while nobody
    cancelled the task is broken, not cancelled: treating it as the task's
    cancellation would record a cancellation nobody asked for.
    """
    if isinstance(exc, Exception):
        return True
    if isinstance(exc, asyncio.CancelledError):
        task = asyncio.current_task()
        return task is not None and not task.cancelling()
    return False


def _safe_repr(obj: object) -> str:
    try:
        return repr(obj)
    except Exception:
        return f"<{type(obj).__name__}>"


class Emitter:
    """The listeners of one running supervisor, and the one place that calls them.

    ``quiet`` is True when nothing but the log listener listens: then
    ``task:started`` (never logged) is not even built. ``log_success`` says
    whether a ``task:succeeded`` line would be printed; with ``quiet`` it
    decides whether a success builds anything at all.
    """

    __slots__ = (
        "_listeners",
        "deadline",
        "handler",
        "log",
        "log_success",
        "quiet",
        "wants_success",
    )

    def __init__(self, log: LogListener, handler: HandlerListener | None) -> None:
        self.log = log
        self.handler = handler
        self._listeners: list[Listener] = []
        # Set once shutdown starts cancelling: handlers get no time past it.
        self.deadline = math.inf
        self.log_success = level_enabled(log.logger, log.success_level)
        self.quiet = True
        self.wants_success = True
        self._recompute()

    def _recompute(self) -> None:
        self.quiet = self.handler is None and not self._listeners
        self.wants_success = self.log_success or not self.quiet

    def add(self, listener: Listener) -> None:
        """Add a sync listener (checked by the caller); it gets every event from now."""
        if listener not in self._listeners:
            self._listeners.append(listener)
        self._recompute()

    def remove(self, listener: Listener) -> bool:
        """Remove a listener; False if it was not there."""
        try:
            self._listeners.remove(listener)
        except ValueError:
            return False
        self._recompute()
        return True

    def publish(self, event: TaskEvent) -> None:
        """Hand ``event`` to the log and to every sync listener (never raises)."""
        self.log(event)
        for listener in tuple(self._listeners):
            try:
                listener(event)
            except Exception as exc:
                self.remove(listener)
                safe_log(
                    self.log.logger,
                    "error",
                    "supervisor:listener_failed",
                    listener=_safe_repr(listener),
                    event_name=event.event,
                    task_id=event.task_id,
                    error=_describe(exc),
                    error_type=type(exc).__name__,
                    exc_info=exc,
                    action="removed",
                )

    async def emit(self, event: TaskEvent) -> None:
        """Publish ``event``, then deliver it to the ``on_event`` handler, if any."""
        self.publish(event)
        if self.handler is not None:
            await self.handler.deliver(event, self.deadline)
