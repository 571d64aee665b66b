"""Task records: :class:`TaskState`, :class:`BackgroundTask` and per-task options.

A :class:`BackgroundTask` is the public, read-mostly record of one spawned
task. Only the supervisor's runner (``_runner.py``) changes its state, always
from the event loop thread, so the record needs no locking. Timestamps are
kept as ``time.time()`` floats and turned into aware UTC datetimes only when
read, which keeps the spawn path free of ``datetime`` work.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio
import attrs

from .exceptions import TaskCancelled, TaskFailed

if TYPE_CHECKING:
    from ._supervisor import Supervisor

__all__ = ["BackgroundTask", "Retry", "TaskOptions", "TaskState"]

T = TypeVar("T")


class TaskState(enum.Enum):
    """Where a task is in its life: ``PENDING → RUNNING → one terminal state``.

    Retries go ``RUNNING → PENDING → RUNNING``. The terminal states
    (``SUCCEEDED``, ``FAILED``, ``CANCELLED``) are reached exactly once.
    The values are the lower-case names used in logs and events.
    """

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True for ``SUCCEEDED``, ``FAILED`` and ``CANCELLED``."""
        return self in _TERMINAL


_TERMINAL = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED})


def _positive_or_none(name: str) -> Callable[[Any, Any, float | None], None]:
    def check(_inst: Any, _attr: Any, value: float | None) -> None:
        if value is not None and not value > 0:
            raise ValueError(
                f"{name} must be a positive number of seconds or None, got {value!r}; "
                f"pass e.g. {name}=30.0, or None for no limit"
            )

    return check


@attrs.frozen
class Retry:
    """Retry a failing task with exponential backoff and full jitter.

    ``attempts`` is the total number of tries (so ``attempts=3`` means two
    retries). Only exceptions that are instances of ``on`` are retried; any
    other exception fails the task at once. The delay before try *n + 1* is
    ``min(maximum, initial * multiplier ** (n - 1))`` scaled by a random
    factor in ``[1 - jitter, 1]``, so that many tasks failing together do not
    retry in lockstep. While it waits, the task is ``PENDING``; it keeps its
    ``max_concurrency`` slot, so a retry never queues behind new work.
    """

    attempts: int = attrs.field(default=3)
    on: type[BaseException] | tuple[type[BaseException], ...] = Exception
    initial: float = 0.1
    maximum: float = 30.0
    multiplier: float = 2.0
    jitter: float = 1.0

    @attempts.validator
    def _check_attempts(self, _attr: Any, value: int) -> None:
        if not isinstance(value, int) or value < 1:
            raise ValueError(
                f"Retry(attempts=...) counts tries including the first and must be "
                f"an int >= 1, got {value!r}"
            )

    def __attrs_post_init__(self) -> None:
        if self.initial < 0 or self.maximum < 0 or self.multiplier < 1:
            raise ValueError(
                "Retry needs initial >= 0, maximum >= 0 and multiplier >= 1, got "
                f"initial={self.initial!r}, maximum={self.maximum!r}, "
                f"multiplier={self.multiplier!r}"
            )
        if not 0 <= self.jitter <= 1:
            raise ValueError(
                f"Retry(jitter=...) must be within [0, 1], got {self.jitter!r}"
            )
        classes = self.on if isinstance(self.on, tuple) else (self.on,)
        if not classes or not all(
            isinstance(c, type) and issubclass(c, BaseException) for c in classes
        ):
            raise TypeError(
                "Retry(on=...) takes an exception class or a tuple of them, "
                f"got {self.on!r}"
            )

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed try number ``attempt`` (counting from 1)."""
        base = min(self.maximum, self.initial * self.multiplier ** (attempt - 1))
        return base * (1 - self.jitter * random.random())


@attrs.frozen
class TaskOptions:
    """Per-task options, kept apart from the task function's own arguments.

    ``spawn(func, *args, **kwargs)`` passes every argument to ``func``
    unchanged, so options can never collide with a keyword of ``func`` (a
    ``send_email(..., timeout=5)`` keeps its ``timeout``). Options are given
    through :meth:`Supervisor.options`, which returns a spawner bound to them::

        await sup.options(name="welcome-email", timeout=30).spawn(send_email, to=addr)
    """

    name: str | None = attrs.field(default=None)
    task_id: str | None = attrs.field(default=None)
    timeout: float | None = attrs.field(
        default=None, validator=_positive_or_none("timeout")
    )
    retry: Retry | None = attrs.field(default=None)
    shield: bool = False

    @name.validator
    def _check_name(self, _attr: Any, value: str | None) -> None:
        if value is not None and not isinstance(value, str):
            raise TypeError(f"task name must be a str, got {value!r}")

    @task_id.validator
    def _check_task_id(self, _attr: Any, value: str | None) -> None:
        if value is not None and (not isinstance(value, str) or not value):
            raise TypeError(f"task_id must be a non-empty str, got {value!r}")

    @retry.validator
    def _check_retry(self, _attr: Any, value: Retry | None) -> None:
        if value is not None and not isinstance(value, Retry):
            raise TypeError(
                f"retry takes a supervisor.Retry(...), got {value!r}; "
                "e.g. retry=Retry(attempts=3, on=ConnectionError)"
            )


DEFAULT_OPTIONS = TaskOptions()

# The per-task cancel scope on backends that need none (asyncio cancels the
# asyncio.Task itself); nullcontext is reentrant and stateless, so one serves all.
NO_SCOPE = contextlib.nullcontext()


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


@attrs.define(eq=False, repr=False)
class BackgroundTask(Generic[T]):
    """The record of one background task: its identity, state and outcome.

    Records are created by ``Supervisor.spawn*`` and stay readable after the
    task ends (up to the supervisor's ``history``). Everything public is
    read-only for callers; use :meth:`wait` to get the outcome and
    :meth:`cancel` to stop the task.
    """

    task_id: str
    name: str
    _supervisor: Supervisor = attrs.field(alias="supervisor")
    _func: Callable[..., Any] = attrs.field(alias="func")
    _args: tuple[Any, ...] = attrs.field(alias="args")
    _kwargs: dict[str, Any] = attrs.field(alias="kwargs")
    is_async: bool
    options: TaskOptions
    # The spawn time, and the coroutine made at spawn time (so that bad
    # arguments fail there); first among the defaults so that the spawn path
    # can pass everything positionally.
    _created: float = attrs.field(alias="created")
    _coro: Any = attrs.field(default=None, alias="coro")
    state: TaskState = TaskState.PENDING
    result: T | None = None
    error: BaseException | None = None
    attempts: int = 0
    cancel_reason: str | None = None
    abandoned: bool = False
    _started: float | None = None
    _completed: float | None = None
    # Runner-private: the backend's cancel handle, whether the body was
    # entered, the lazily created event that wait() blocks on, and
    # max_concurrency bookkeeping (holds a slot; waits in the queue with its
    # spawner's context).
    _handle: Any = None
    _scope: contextlib.AbstractContextManager[Any] = NO_SCOPE
    _entered: bool = False
    _thread_done: bool = False
    _done: anyio.Event | None = None
    _slot: bool = False
    _queued: bool = False
    _service: bool = False
    _context: contextvars.Context | None = None

    @property
    def created_at(self) -> datetime:
        """When the task was spawned (aware UTC)."""
        return _utc(self._created)  # type: ignore[return-value]

    @property
    def started_at(self) -> datetime | None:
        """When the body first started running, or None if it never did."""
        return _utc(self._started)

    @property
    def completed_at(self) -> datetime | None:
        """When the task reached its terminal state, or None while it is live."""
        return _utc(self._completed)

    @property
    def duration_s(self) -> float | None:
        """Seconds from first start to the end, or None if not both happened."""
        if self._started is None or self._completed is None:
            return None
        return self._completed - self._started

    @property
    def done(self) -> bool:
        """True once the task is in a terminal state."""
        return self.state in _TERMINAL

    @property
    def supervisor(self) -> Supervisor:
        """The supervisor that owns this task."""
        return self._supervisor

    async def wait(self) -> T:
        """Wait for the task to end and return its result.

        Raises :class:`TaskFailed` (``__cause__`` is the task's exception) if
        it failed and :class:`TaskCancelled` if it was cancelled. Cancelling
        the waiter does not cancel the task: it belongs to the supervisor.
        """
        await self.wait_done()
        return self._outcome()

    async def wait_done(self) -> None:
        """Wait for the task to end, whatever its outcome; never raises it."""
        if self.state in _TERMINAL:
            await anyio.lowlevel.checkpoint()
            return
        if self._done is None:
            self._done = anyio.Event()
        await self._done.wait()

    def _outcome(self) -> T:
        if self.state is TaskState.SUCCEEDED:
            return self.result  # type: ignore[return-value]
        if self.state is TaskState.FAILED:
            raise TaskFailed(
                f"background task {self.name!r} ({self.task_id}) failed: "
                f"{type(self.error).__name__}: {self.error}"
            ) from self.error
        raise TaskCancelled(
            f"background task {self.name!r} ({self.task_id}) was cancelled "
            f"({self.cancel_reason})"
        )

    def cancel(self, reason: str = "cancelled by caller") -> bool:
        """Ask the task to stop; it ends ``CANCELLED`` with ``reason``.

        Returns False if the task had already ended (nothing to cancel) or was
        already being cancelled. A task that has not started yet never starts;
        one whose body returns before the cancellation reaches it still ends
        ``CANCELLED`` (its result is dropped); one that raises on its way out
        ends ``FAILED`` with that error, which is more useful to see. Call
        from the event loop thread that runs the supervisor.
        """
        if self.state in _TERMINAL or self.cancel_reason is not None:
            return False
        self.cancel_reason = reason
        self._supervisor._runner.cancel(self)  # type: ignore[union-attr]
        return True

    def __repr__(self) -> str:
        return (
            f"<supervisor.BackgroundTask {self.name!r} id={self.task_id} "
            f"{self.state.value} attempts={self.attempts}>"
        )
