"""Task records (:class:`BackgroundTask`, :class:`TaskState`) and the job that runs one.

Two objects per task, with one owner each:

* the **record**, :class:`BackgroundTask`: what callers see (id, name,
  state, outcome, times). It is readable for as long as the supervisor keeps
  it (live, then ``history``) and holds nothing that runs;
* the **job**, :class:`Job`: everything needed to run the task (function,
  arguments, coroutine, native handle, cancel scope, flags, context). It is
  private to the runner, which owns the running task; the record points to
  it while the task is live and drops it when the task ends, so a finished
  record keeps no coroutine, no native task and no arguments.

Writes to a record happen only here, through the job's transition methods,
always on the event loop thread, so records need no locking. Timestamps are
``time.time()`` floats, turned into aware UTC datetimes only when read,
which keeps the spawn path free of ``datetime`` work.
"""

from __future__ import annotations

import contextvars
import enum
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

import anyio
import anyio.lowlevel
import attrs

from ._options import TaskOptions
from .exceptions import TaskCancelled, TaskFailed

__all__ = ["BackgroundTask", "Job", "JobOwner", "TaskState", "new_task"]

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

    # Members are singletons compared by identity, so the identity hash is
    # right, and it is C code: Enum's own __hash__ is a Python call, paid by
    # every ``state in TERMINAL`` on the hot path.
    __hash__ = object.__hash__

    @property
    def is_terminal(self) -> bool:
        """True for ``SUCCEEDED``, ``FAILED`` and ``CANCELLED``."""
        return self in TERMINAL


PENDING = TaskState.PENDING
RUNNING = TaskState.RUNNING
TERMINAL = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED})


def _safe_str(exc: BaseException | None) -> str:
    """``str(exc)``, even for an exception whose ``__str__`` raises."""
    try:
        return str(exc)
    except Exception as inner:
        return f"<str() of {type(exc).__name__} raised {type(inner).__name__}>"


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


@attrs.define(eq=False, repr=False, init=False)
class BackgroundTask(Generic[T]):
    """The record of one background task: its identity, state and outcome.

    Records are made by ``Supervisor.spawn*`` (not by calling this class)
    and stay readable after the task ends, up to the supervisor's
    ``history``. Every attribute is read-only for callers: use :meth:`wait`
    to get the outcome and :meth:`cancel` to stop the task.

    Attributes: ``task_id``, ``name``, ``state`` (:class:`TaskState`),
    ``result``, ``error`` (the exception, or None), ``attempts`` (runs
    started, from 1), ``cancel_reason``, ``abandoned`` (cancelled at the
    shutdown deadline while its worker thread still ran) and ``options``
    (the :class:`TaskOptions` it was spawned with).
    """

    task_id: str
    name: str
    options: TaskOptions
    state: TaskState
    result: T | None
    error: BaseException | None
    attempts: int
    cancel_reason: str | None
    abandoned: bool
    _created: float
    _started: float | None
    _completed: float | None
    # The runner's job while the task is live; None once it has ended.
    _job: Job | None

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise TypeError(
            "BackgroundTask records are made by the supervisor: call "
            "`await sup.spawn(func, ...)` (or spawn_nowait/spawn_threadsafe) "
            "instead of constructing one"
        )

    @property
    def created_at(self) -> datetime:
        """When the task was spawned (aware UTC)."""
        return datetime.fromtimestamp(self._created, UTC)

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
        return self.state in TERMINAL

    async def wait(self, timeout: float | None = None) -> T:
        """Wait for the task to end and return its result.

        Raises :class:`TaskFailed` (``__cause__`` is the task's exception) if
        it failed and :class:`TaskCancelled` if it was cancelled. With
        ``timeout`` (seconds), raises ``TimeoutError`` if the task has not
        ended by then; the task goes on. Cancelling the waiter does not
        cancel the task: it belongs to the supervisor.
        """
        if timeout is None:
            await self.wait_done()
        else:
            if isinstance(timeout, bool) or not isinstance(timeout, int | float):
                raise TypeError(
                    f"wait(timeout=...) takes a number of seconds or None, got "
                    f"{timeout!r}"
                )
            with anyio.fail_after(timeout):
                await self.wait_done()
        return self._outcome()

    async def wait_done(self) -> None:
        """Wait for the task to end, whatever its outcome; never raises it."""
        job = self._job
        if job is None or self.state in TERMINAL:
            await anyio.lowlevel.checkpoint()
            return
        if job.done is None:
            job.done = anyio.Event()
        await job.done.wait()

    def _outcome(self) -> T:
        if self.state is TaskState.SUCCEEDED:
            return self.result  # type: ignore[return-value]
        if self.state is TaskState.FAILED:
            raise TaskFailed(
                f"background task {self.name!r} ({self.task_id}) failed: "
                f"{type(self.error).__name__}: {_safe_str(self.error)}"
            ) from self.error
        raise TaskCancelled(
            f"background task {self.name!r} ({self.task_id}) was cancelled "
            f"({self.cancel_reason})"
        )

    def cancel(self, reason: str = "cancelled by caller") -> bool:
        """Ask the task to stop; it ends ``CANCELLED`` with ``reason``.

        Returns False if the task had already ended (nothing to cancel) or
        was already being cancelled. A task that has not started yet never
        starts; one whose body returns before the cancellation reaches it
        still ends ``CANCELLED`` (its result is dropped); one that raises on
        its way out ends ``FAILED`` with that error, which is more useful to
        see. Safe to call from any thread: from another thread it blocks
        that thread until the event loop has taken the request (usually
        microseconds), so never call it from a thread the event loop is
        itself blocked on, such as code the loop runs synchronously and
        waits for; that would deadlock. Worker threads (``to_thread``, a
        framework's thread pool) are fine. Once the loop has finished it
        returns False.
        """
        if not isinstance(reason, str):
            raise TypeError(f"cancel(reason=...) takes a str, got {reason!r}")
        job = self._job
        if job is None:
            return False
        return job.cancel(reason)

    def __repr__(self) -> str:
        return (
            f"<supervisor.BackgroundTask {self.name!r} id={self.task_id} "
            f"{self.state.value} attempts={self.attempts}>"
        )


class JobOwner(Protocol):
    """What a job needs from the runner that owns it (no import of the runner)."""

    loop_thread: int

    def cancel_job(self, job: Job) -> None:
        """Deliver a cancellation whose reason is already on the record."""

    def call_in_loop(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run ``func(*args)`` on the loop thread from another thread; its result."""


@attrs.define(eq=False, repr=False)
class Job:
    """Runner-private: everything needed to run one task, and its record's writes.

    ``handle`` is the backend's native cancel handle: the ``asyncio.Task``,
    or on trio the ``CancelScope`` the body entered. ``entered`` says the
    native task has started its body; ``slot`` that it holds a ``max_concurrency``
    slot; ``queued`` that it waits for one, to start in ``context`` (its
    spawner's); ``thread_done`` that its worker thread returned.
    """

    record: BackgroundTask[Any]
    owner: JobOwner
    coro: Any
    func: Callable[..., Any] | None
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    is_async: bool
    service: bool = False
    handle: Any = None
    entered: bool = False
    thread_done: bool = False
    slot: bool = False
    queued: bool = False
    context: contextvars.Context | None = None
    done: anyio.Event | None = None

    # -- transitions (the only writes to a record) -------------------------

    def start(self) -> None:
        """``PENDING → RUNNING``: a run (the first, or a retry) begins."""
        record = self.record
        record.state = RUNNING
        record.attempts += 1
        if record._started is None:
            record._started = time.time()

    def to_pending(self) -> None:
        """``RUNNING → PENDING``: waiting to retry."""
        self.record.state = PENDING

    def settle(self, state: TaskState) -> TaskState | None:
        """Move to the terminal ``state``; the state it left, None if it had ended."""
        record = self.record
        previous = record.state
        if previous in TERMINAL:
            return None
        record.state = state
        record._completed = time.time()
        return previous

    def record_cancel_reason(self, reason: str) -> None:
        """Note why the task is being cancelled (the first reason wins)."""
        if self.record.cancel_reason is None:
            self.record.cancel_reason = reason

    def release(self) -> None:
        """Detach from the finished record (nothing else keeps a job); wake waiters.

        With the record's reference gone the job, its native task, scope and
        arguments are freed as the body returns, so history holds outcomes,
        not the arguments and frames of every task.
        """
        self.record._job = None
        if self.done is not None:
            self.done.set()

    def next_run(self) -> None:
        """A service starts its next run: one more attempt, still ``RUNNING``."""
        self.record.attempts += 1

    # -- requests from callers ---------------------------------------------

    def cancel(self, reason: str) -> bool:
        owner = self.owner
        if threading.get_ident() != owner.loop_thread:
            return bool(owner.call_in_loop(self.cancel, reason))
        record = self.record
        if record.state in TERMINAL or record.cancel_reason is not None:
            return False
        record.cancel_reason = reason
        owner.cancel_job(self)
        return True


def new_task(  # noqa: PLR0917 - positional on the hot path: cheaper
    owner: JobOwner,
    task_id: str,
    name: str,
    options: TaskOptions,
    coro: Any,
    func: Callable[..., Any] | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    is_async: bool,
    service: bool = False,
) -> Job:
    """Make a ``PENDING`` record and its job; nothing is scheduled yet."""
    record: BackgroundTask[Any] = object.__new__(BackgroundTask)
    record.task_id = task_id
    record.name = name
    record.options = options
    record.state = PENDING
    record.result = None
    record.error = None
    record.attempts = 0
    record.cancel_reason = None
    record.abandoned = False
    record._created = time.time()
    record._started = None
    record._completed = None
    # Positional: keyword passing costs a third of the construction.
    job = Job(record, owner, coro, func, args, kwargs, is_async, service)
    record._job = job
    return job
