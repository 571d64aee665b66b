"""Running one task: its state machine, accounting, terminal log line and events.

The :class:`Runner` owns what changes while tasks run: the live and history
tables, the counters behind ``stats()``, and the limiters. Every change
happens on the event loop thread between checkpoints, so the counters always
satisfy ``spawned == pending + running + succeeded + failed + cancelled``.

Each task ends through :meth:`Runner._settle`, which refuses a second
terminal state; that is what makes "exactly one terminal state, reached
once" hold even when shutdown gives up on a task that later wakes up.
"""

from __future__ import annotations

import contextvars
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from ._events import EventSink, safe_log
from ._task import DEFAULT_OPTIONS, NO_SCOPE, BackgroundTask, TaskState

if TYPE_CHECKING:
    from ._backend import Backend

__all__ = ["Runner"]

_PENDING = TaskState.PENDING
_RUNNING = TaskState.RUNNING
_SUCCEEDED = TaskState.SUCCEEDED
_FAILED = TaskState.FAILED
_CANCELLED = TaskState.CANCELLED

Task = BackgroundTask[Any]


@attrs.define(eq=False)
class Runner:
    """Runs and accounts for the tasks of one supervisor (one per startup)."""

    name: str
    backend: Backend
    logger: Any
    sink: EventSink | None
    # Free max_concurrency slots (None: no limit). Tasks that find none wait
    # in ``queue`` *before* their native task exists: slots are handed out in
    # spawn order (trio shuffles the first steps of new tasks, so acquiring a
    # limiter inside the task could not be FIFO), each queued task starts in
    # its own spawner's context, and a waiting task costs no native task.
    slots: int | None
    threads: anyio.CapacityLimiter
    # max_pending: one token per queued task; spawn() waits on it when full.
    admission: anyio.CapacityLimiter | None
    history_limit: int
    on_fatal: Callable[[BaseException, Task], None]
    # Whether the app's logger lets debug lines through, decided at startup:
    # success lines are most of the traffic, and building one that is then
    # filtered out costs more than the rest of a task's bookkeeping.
    log_success: bool = True
    queue: deque[Task] = attrs.Factory(deque)
    queued: int = 0
    live: dict[str, Task] = attrs.Factory(dict)
    # Oldest first; an OrderedDict evicts in O(1) (deleting a plain dict's
    # first key leaves holes that the next lookup of the first key walks).
    history: OrderedDict[str, Task] = attrs.Factory(OrderedDict)
    pending: int = 0
    running: int = 0
    spawned: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    # Set once shutdown starts cancelling: event handlers get no time past it.
    hard_deadline: float = math.inf
    _idle: anyio.Event | None = None
    # to_thread's own limiter: ours (``threads``) is acquired before the
    # thread starts so that the task can turn RUNNING exactly then.
    _no_limit: anyio.CapacityLimiter = attrs.Factory(
        lambda: anyio.CapacityLimiter(math.inf)
    )

    # -- launching ---------------------------------------------------------

    def _register(self, task: Task) -> None:
        if task.options.task_id is not None:
            # Reusing a finished task's id: the new record replaces the old
            # one, but only now that the new task is certainly admitted.
            self.history.pop(task.task_id, None)
        self.live[task.task_id] = task
        self.spawned += 1
        self.pending += 1

    def launch(self, task: Task) -> None:
        """Register a validated, admitted task and start its native task."""
        self._register(task)
        self.backend.spawn(self.run, task)

    def try_admit(self, task: Task) -> bool:
        """Start ``task`` or queue it for a slot; False if ``max_pending`` is full."""
        if self.slots is None:
            # launch(), inlined: this is every spawn without max_concurrency.
            if task.options.task_id is not None:
                self.history.pop(task.task_id, None)
            self.live[task.task_id] = task
            self.spawned += 1
            self.pending += 1
            self.backend.spawn(self.run, task)
            return True
        if self.slots > 0 and not self.queued:
            self.slots -= 1
            task._slot = True
            self.launch(task)
            return True
        if self.admission is not None:
            try:
                self.admission.acquire_on_behalf_of_nowait(task)
            except anyio.WouldBlock:
                return False
        self.enqueue(task)
        return True

    def enqueue(self, task: Task) -> None:
        """Queue ``task`` for a slot (holding its admission token, if any)."""
        self._register(task)
        task._context = contextvars.copy_context()
        task._queued = True
        self.queued += 1
        self.queue.append(task)
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand free slots to queued tasks, oldest first."""
        queue = self.queue
        while self.slots and queue:
            task = queue.popleft()
            if not task._queued:  # cancelled while queued; already started
                continue
            self.slots -= 1
            task._slot = True
            self._start_queued(task)

    def _start_queued(self, task: Task) -> None:
        task._queued = False
        self.queued -= 1
        if self.admission is not None:
            self.admission.release_on_behalf_of(task)
        context, task._context = task._context, None
        assert context is not None
        context.run(self.backend.spawn, self.run, task)

    def cancel(self, task: Task) -> None:
        """Cancel ``task`` (its ``cancel_reason`` is set) wherever it is."""
        if task._queued:
            # Start it without a slot: it sees its cancel_reason on entry and
            # ends CANCELLED with attempt=0, never running its body.
            self._start_queued(task)
        else:
            self.backend.cancel(task, task.cancel_reason or "cancelled")

    @property
    def terminal_total(self) -> int:
        return self.succeeded + self.failed + self.cancelled

    async def wait_idle(self) -> None:
        """Wait until no task is live and every event has been delivered."""
        while self.live:
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()

    # -- the task body -----------------------------------------------------

    async def run(self, task: Task) -> None:
        """The native task's body: never lets an exception reach the nursery.

        ``task._scope`` is the task's own trio ``CancelScope`` (on asyncio, a
        shared no-op context: the asyncio task itself is the cancel handle).
        """
        with task._scope:
            task._entered = True
            if task.cancel_reason is not None:
                # Cancelled before it ever started: no task:started, attempt=0.
                if task._coro is not None:
                    task._coro.close()
                await self._end_cancelled(task)
                return
            try:
                if task.is_async and task.options is DEFAULT_OPTIONS:
                    # The hot path: no options, no threads.
                    self._start(task)
                    if self.sink is not None:
                        await self._emit(task, "task:started")
                    coro, task._coro = task._coro, None
                    result = await coro
                else:
                    result = await self._run_attempts(task)
            except BaseException as exc:
                await self._end_exc(task, exc)
            else:
                if _cancel_requested(task):
                    # cancel() said yes, but the body returned before the
                    # cancellation reached it (trio delivers it at the next
                    # checkpoint): the caller's request wins, as on asyncio.
                    await self._end_cancelled(task)
                elif self._settle(task, _SUCCEEDED):
                    task.result = result
                    if self.log_success:
                        safe_log(
                            self.logger, "debug", "task:succeeded", **self._fields(task)
                        )
                    if self.sink is not None:
                        await self._emit(task, "task:succeeded")
                    self._retire(task)

    async def _run_attempts(self, task: Task) -> Any:
        options = task.options
        retry = options.retry
        delay = 0.0
        while True:
            await self._acquire(task)
            try:
                first = task.attempts == 0
                self._start(task)
                if first and self.sink is not None:
                    await self._emit(task, "task:started")
                try:
                    if options.timeout is None:
                        return await self._call(task)
                    with anyio.fail_after(
                        options.timeout,
                        reason=f"task {task.name!r} exceeded its {options.timeout} s "
                        "timeout",
                    ):
                        return await self._call(task)
                except Exception as exc:
                    if (
                        retry is None
                        or task.attempts >= retry.attempts
                        or not isinstance(exc, retry.on)
                        or task.cancel_reason is not None
                    ):
                        raise
                    delay = retry.delay(task.attempts)
                    self._to_pending(task)
                    await self._retrying(task, exc, delay)
            finally:
                self._release(task)
            await anyio.sleep(delay)

    async def _call(self, task: Task) -> Any:
        if task.is_async:
            coro, task._coro = task._coro, None
            if coro is None:  # a retry: make a fresh coroutine
                coro = task._func(*task._args, **task._kwargs)
            return await coro
        task._thread_done = False
        return await anyio.to_thread.run_sync(
            _in_thread, task, abandon_on_cancel=True, limiter=self._no_limit
        )

    async def _acquire(self, task: Task) -> None:
        # A sync task stays PENDING until a worker thread is free for it.
        if not task.is_async:
            await self.threads.acquire_on_behalf_of(task)

    def _release(self, task: Task) -> None:
        if not task.is_async:
            self.threads.release_on_behalf_of(task)

    # -- state transitions -------------------------------------------------

    def _start(self, task: Task) -> None:
        task.state = _RUNNING
        task.attempts += 1
        if task._started is None:
            task._started = time.time()
        self.pending -= 1
        self.running += 1

    def _to_pending(self, task: Task) -> None:
        task.state = _PENDING
        self.running -= 1
        self.pending += 1

    def _settle(self, task: Task, state: TaskState) -> bool:
        """Move ``task`` to its terminal ``state``; False if it already had one."""
        previous = task.state
        if previous is _RUNNING:
            self.running -= 1
        elif previous is _PENDING:
            self.pending -= 1
        else:
            return False
        task.state = state
        task._completed = time.time()
        if state is _SUCCEEDED:
            self.succeeded += 1
        elif state is _FAILED:
            self.failed += 1
        else:
            self.cancelled += 1
        return True

    def _retire(self, task: Task) -> None:
        """Move an ended task from the live table to the bounded history."""
        task_id = task.task_id
        if self.live.get(task_id) is task:
            del self.live[task_id]
        # Drop what a finished record no longer needs, so that history holds
        # outcomes, not the arguments and frames of every task.
        task._func = task._args = task._kwargs = task._handle = None  # type: ignore[assignment]
        task._scope = NO_SCOPE  # on trio, the task's spent CancelScope
        if self.history_limit:
            history = self.history
            history[task_id] = task
            if len(history) > self.history_limit:
                history.popitem(last=False)
        if task._slot:
            task._slot = False
            self.slots += 1  # type: ignore[operator]
            self._dispatch()
        if task._done is not None:
            task._done.set()
        if not self.live and self._idle is not None:
            self._idle.set()
            self._idle = None

    # -- outcomes ----------------------------------------------------------

    def _fields(self, task: Task) -> dict[str, Any]:
        return {
            "task_id": task.task_id,
            "task_name": task.name,
            "supervisor": self.name,
            "state": task.state.value,
            "attempt": task.attempts,
            "duration_s": task.duration_s,
        }

    async def _end_exc(self, task: Task, exc: BaseException) -> None:
        if isinstance(exc, self.backend.cancelled_exc):
            ours = task.cancel_reason is not None
            if not ours:
                task.cancel_reason = "cancelled from outside the supervisor"
            await self._end_cancelled(task)
            # On trio this re-raises so that the task's scope absorbs it; on
            # asyncio it un-cancels our own cancellation (re-raising others).
            self.backend.absorb_cancel(exc, ours=ours)
            return
        if not self._settle(task, _FAILED):
            return
        task.error = exc
        safe_log(
            self.logger,
            "error",
            "task:failed",
            **self._fields(task),
            error=str(exc),
            error_type=type(exc).__name__,
            exc_info=exc,
        )
        if self.sink is not None:
            await self._emit(
                task, "task:failed", error=str(exc), error_type=type(exc).__name__
            )
        self._retire(task)
        if not isinstance(exc, Exception):
            # KeyboardInterrupt, SystemExit, ...: recorded, then they stop the
            # supervisor as they would stop a trio nursery.
            self.on_fatal(exc, task)

    async def _end_cancelled(self, task: Task) -> None:
        was_running_thread = (
            not task.is_async and task.state is _RUNNING and not task._thread_done
        )
        if not self._settle(task, _CANCELLED):
            return
        task.abandoned = was_running_thread
        extra: dict[str, Any] = {"reason": task.cancel_reason}
        if was_running_thread:
            extra["abandoned"] = True
        safe_log(
            self.logger, "warning", "task:cancelled", **self._fields(task), **extra
        )
        if self.sink is not None:
            await self._emit(task, "task:cancelled", **extra)
        self._retire(task)

    async def _retrying(self, task: Task, exc: Exception, delay: float) -> None:
        extra = {
            "error": str(exc),
            "error_type": type(exc).__name__,
            "retry_in_s": round(delay, 3),
        }
        safe_log(self.logger, "warning", "task:retrying", **self._fields(task), **extra)
        if self.sink is not None:
            await self._emit(task, "task:retrying", **extra)

    async def _emit(self, task: Task, event: str, **extra: Any) -> None:
        assert self.sink is not None
        data = {
            "task_id": task.task_id,
            "name": task.name,
            "supervisor": self.name,
            "attempt": task.attempts,
            "state": task.state.value,
            **extra,
        }
        await self.sink.emit(event, data, self.hard_deadline)

    # -- shutdown support --------------------------------------------------

    async def abandon(self, task: Task) -> None:
        """Give up on a cancelled task that did not end in time (SPEC 3).

        The record ends ``CANCELLED`` and ``abandoned``; if the task's code
        wakes up later, :meth:`_settle` ignores its outcome.
        """
        if task.cancel_reason is None:
            task.cancel_reason = "shutdown"
        if self._settle(task, _CANCELLED):
            task.abandoned = True
            extra = {"reason": task.cancel_reason, "abandoned": True}
            safe_log(
                self.logger, "warning", "task:cancelled", **self._fields(task), **extra
            )
            if self.sink is not None:
                await self._emit(task, "task:cancelled", **extra)
            self._retire(task)


def _cancel_requested(task: Task) -> bool:
    # A function, not an inline test: cancel() may set the reason while the
    # body awaits, and type checkers would narrow the attribute across it.
    return task.cancel_reason is not None


def _in_thread(task: Task) -> Any:
    try:
        result = task._func(*task._args, **task._kwargs)
    finally:
        task._thread_done = True
    if hasattr(result, "__await__"):
        close = getattr(result, "close", None)
        if close is not None:
            close()
        raise TypeError(
            f"{task.name!r} was run in a worker thread as a plain function but "
            f"returned an awaitable ({type(result).__name__}); declare it with "
            "`async def` (or pass the async function itself, not a wrapper) so "
            "that the supervisor awaits it"
        )
    return result
