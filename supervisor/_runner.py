"""The runner: owns every running task of one supervisor, from admission to history.

The :class:`Runner` is the one owner of a running task. It builds the task's
record and job, decides admission (a ``max_concurrency`` slot now, a place
in the FIFO queue, or :class:`Overloaded` when ``max_pending`` is full: one
decision, in :meth:`Runner.admit`), starts the native task through the
backend, runs the body, and ends the task through one terminal transition
that refuses a second end. That is what makes "exactly one terminal state,
reached once" hold even when shutdown gives up on a task that later wakes.

Accounting lives here too: the live and history tables and the counters
behind ``stats()``. Every change happens on the event loop thread between
checkpoints, so ``spawned == pending + running + succeeded + failed +
cancelled`` holds at every checkpoint. Each transition that matters becomes
one :class:`~supervisor._events.TaskEvent`, handed to the emitter once.

The :class:`~supervisor.Supervisor` in front of it checks its own phase and
the calling thread, then delegates; services and shutdown use the public
methods below, never a task's internals.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from inspect import CO_COROUTINE
from types import FunctionType
from typing import Any

import anyio
import anyio.from_thread

from ._backend import Backend
from ._events import Emitter, TaskEvent, make_event
from ._frames import timeout_error, user_frames
from ._options import DEFAULT_OPTIONS, TaskOptions
from ._prepare import make_coroutine_fast, prepare
from ._records import SupervisorStats, make_stats
from ._table import TaskTable
from ._task import (
    RUNNING,
    BackgroundTask,
    Job,
    TaskState,
    new_task,
)
from .exceptions import Overloaded, SupervisorError

__all__ = ["Runner"]

_SUCCEEDED = TaskState.SUCCEEDED
_FAILED = TaskState.FAILED
_CANCELLED = TaskState.CANCELLED

_NO_ARGS: tuple[Any, ...] = ()
_NO_KWARGS: dict[str, Any] = {}
_NO_DETAILS: Mapping[str, Any] = {}

Record = BackgroundTask[Any]


class Runner:
    """Runs and accounts for the tasks of one supervisor (one per startup)."""

    def __init__(
        self,
        *,
        name: str,
        backend: Backend,
        emitter: Emitter,
        threads: anyio.CapacityLimiter,
        max_concurrency: int | None,
        max_pending: int | None,
        history: int,
        history_ttl: float | None,
        on_fatal: Callable[[BaseException, Record], None],
    ) -> None:
        self.name = name
        self.backend = backend
        self.emitter = emitter
        self.threads = threads
        self.on_fatal = on_fatal
        self.loop_thread = threading.get_ident()
        self.token = anyio.lowlevel.current_token()
        self.max_concurrency = max_concurrency
        self.max_pending = max_pending
        # Free max_concurrency slots (None: no limit). Tasks that find none
        # wait in ``queue`` *before* their native task exists: slots go out in
        # spawn order (trio shuffles the first steps of new tasks, so a
        # limiter acquired inside each task could not be FIFO), each queued
        # task starts in its own spawner's context, and a waiting task costs
        # no native task.
        self.slots = max_concurrency
        # max_pending: one token per queued task; spawn() waits on it when full.
        self.admission = (
            None if max_pending is None else anyio.CapacityLimiter(max_pending)
        )
        self.queue: deque[Job] = deque()
        self.queued = 0
        self.live: dict[str, Job] = {}
        # Oldest first; an OrderedDict evicts in O(1) (deleting a plain dict's
        # first key leaves holes that the next lookup of the first key walks).
        self.history: OrderedDict[str, Record] = OrderedDict()
        self.history_limit = history
        self.history_ttl = history_ttl
        self._expiry: deque[tuple[float, str, Record]] = deque()
        self.pending = 0
        self.running = 0
        self.spawned = 0
        self.succeeded = 0
        self.failed = 0
        self.cancelled = 0
        # Set when shutdown begins: services stop restarting.
        self.closing = False
        self._idle: anyio.Event | None = None
        # to_thread's own limiter: ours (``threads``) is acquired before the
        # thread starts so that the task can turn RUNNING exactly then.
        self._no_limit = anyio.CapacityLimiter(math.inf)
        # Ids: a per-runner random prefix and a counter; cheap and unique.
        self._prefix = uuid.uuid4().hex[:8] + "-"
        self._seq = 0
        self.tasks = TaskTable(self.live, self.history, self.expire)
        self._native_spawn = backend.spawn
        self._new_scope = backend.new_scope
        self._run = self._run_body if backend.new_scope is None else self._run_in_scope

    # -- admission -----------------------------------------------------------

    def build(
        self,
        func: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: TaskOptions,
        *,
        service: bool = False,
    ) -> Job:
        """Check what is spawned and make its record and job (not registered)."""
        coro, is_async, name = prepare(func, args, kwargs, options.name)
        task_id = options.task_id
        if task_id is None:
            self._seq += 1
            task_id = self._prefix + str(self._seq)
        elif task_id in self.live:
            if coro is not None:
                coro.close()
            raise self._id_in_use(task_id)
        if is_async and options.plain:
            # The coroutine is all a plain async task needs: keeping the
            # function and arguments would only keep them alive longer.
            return new_task(
                self, task_id, name, options, coro, None, _NO_ARGS, _NO_KWARGS,
                True, service,
            )  # fmt: skip
        return new_task(
            self, task_id, name, options, coro, func, args, kwargs, is_async, service
        )

    def _id_in_use(self, task_id: str) -> SupervisorError:
        return SupervisorError(
            f"task_id {task_id!r} is already used by a live task of Supervisor "
            f"{self.name!r}; pick another id, or wait for that task to finish "
            "(a finished task's id may be reused)"
        )

    def check_id(self, job: Job) -> None:
        """Refuse a caller-chosen id that a live task took meanwhile."""
        task_id = job.record.task_id
        if job.record.options.task_id is not None and task_id in self.live:
            raise self._id_in_use(task_id)

    def admit(self, job: Job, *, placed: bool = False) -> bool:
        """Start ``job``, or queue it for a slot; False if ``max_pending`` is full.

        ``placed``: the caller already holds a ``max_pending`` place for it
        (:meth:`wait_for_place`).
        """
        slots = self.slots
        if slots is None or job.service:
            # Services run outside the limits: they would hold a slot forever.
            self._register(job)
            self._launch(job)
            return True
        if slots > 0 and not self.queued and not placed:
            self.slots = slots - 1
            job.slot = True
            self._register(job)
            self._launch(job)
            return True
        if not placed and self.admission is not None:
            try:
                self.admission.acquire_on_behalf_of_nowait(job)
            except anyio.WouldBlock:
                return False
        self._register(job)
        job.context = contextvars.copy_context()
        job.queued = True
        self.queued += 1
        self.queue.append(job)
        self._dispatch()
        return True

    async def wait_for_place(self, job: Job) -> None:
        """Wait (FIFO) for a ``max_pending`` place for ``job``; cancellable."""
        assert self.admission is not None
        await self.admission.acquire_on_behalf_of(job)

    def give_back(self, job: Job) -> None:
        """Undo :meth:`wait_for_place` and :meth:`build` for a job not admitted."""
        if self.admission is not None:
            with contextlib.suppress(RuntimeError):  # it held no place
                self.admission.release_on_behalf_of(job)
        discard(job)

    def spawn_nowait(
        self,
        func: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: TaskOptions,
    ) -> Record:
        """Build and admit at once: the whole synchronous spawn."""
        if (
            options is DEFAULT_OPTIONS
            and self.slots is None
            and type(func) is FunctionType
            and func.__code__.co_flags & CO_COROUTINE
        ):
            # The hot path, build() and admit() inlined for the commonest
            # spawn there is (a plain `async def`, no options, no limits): a
            # call less per step is measurable at a few µs per task.
            coro = make_coroutine_fast(func, args, kwargs)
            self._seq += 1
            task_id = self._prefix + str(self._seq)
            job = new_task(
                self, task_id, func.__qualname__, options, coro, None, _NO_ARGS,
                _NO_KWARGS, True,
            )  # fmt: skip
            self.live[task_id] = job
            self.spawned += 1
            self.pending += 1
            job.handle = self._native_spawn(self._run, job)
            return job.record
        job = self.build(func, args, kwargs, options)
        if not self.admit(job):
            discard(job)
            raise Overloaded(
                f"Supervisor {self.name!r} is full: max_concurrency="
                f"{self.max_concurrency} tasks running and max_pending="
                f"{self.max_pending} waiting. Use `await sup.spawn(...)` to wait for "
                "room, shed the load (e.g. answer 503), or raise the limits"
            )
        return job.record

    def _register(self, job: Job) -> None:
        record = job.record
        task_id = record.task_id
        if record.options.task_id is not None:
            # Reusing a finished task's id: the new record replaces the old
            # one, now that the new task is certainly admitted.
            self.history.pop(task_id, None)
        self.live[task_id] = job
        self.spawned += 1
        self.pending += 1

    def _launch(self, job: Job) -> None:
        job.handle = self._native_spawn(self._run, job)

    def _dispatch(self) -> None:
        """Hand free slots to queued tasks, oldest first."""
        queue = self.queue
        while self.slots and queue:
            job = queue.popleft()
            if not job.queued:  # cancelled while queued; already started
                continue
            self.slots -= 1
            job.slot = True
            self._start_queued(job)

    def _start_queued(self, job: Job) -> None:
        job.queued = False
        self.queued -= 1
        if self.admission is not None:
            self.admission.release_on_behalf_of(job)
        context, job.context = job.context, None
        assert context is not None
        context.run(self._launch, job)

    # -- requests from records and from the supervisor ----------------------

    def cancel_job(self, job: Job) -> None:
        """Deliver a cancellation (its reason is on the record) wherever the task is."""
        if job.queued:
            # Start it without a slot: it sees its cancel_reason on entry and
            # ends CANCELLED with attempt=0, never running its body.
            self._start_queued(job)
        elif job.entered:
            # Before its first step a task would be cancelled before the
            # body's try block (or, on trio, its scope) exists; the body
            # checks the reason on entry instead.
            self.backend.cancel(job.handle, job.record.cancel_reason or "cancelled")

    def call_in_loop(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run ``func(*args)`` on the loop thread from another thread."""
        try:
            return anyio.from_thread.run_sync(func, *args, token=self.token)
        except anyio.RunFinishedError:
            return False

    def cancel_all(self, reason: str, *, spare: Record | None = None) -> None:
        """Cancel every live task that is not shielded (and not ``spare``)."""
        for job in list(self.live.values()):
            record = job.record
            if record is not spare and not record.options.shield:
                record.cancel(reason)

    def live_jobs(self) -> list[Job]:
        """The live tasks' jobs, oldest first (a copy)."""
        return list(self.live.values())

    @property
    def ended(self) -> int:
        """Tasks that reached a terminal state since startup."""
        return self.succeeded + self.failed + self.cancelled

    def stats(self) -> SupervisorStats:
        return make_stats(
            self.pending,
            self.running,
            self.spawned,
            self.succeeded,
            self.failed,
            self.cancelled,
        )

    async def wait_idle(self) -> None:
        """Wait until no task is live and every event has been delivered."""
        if not self.live:
            await anyio.lowlevel.checkpoint()  # a checkpoint on every call
        while self.live:
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()

    # -- the task body -------------------------------------------------------

    async def _run_in_scope(self, job: Job) -> None:
        """trio's body: the task's own ``CancelScope`` is its cancel handle."""
        assert self._new_scope is not None
        job.handle = scope = self._new_scope(shield=job.record.options.shield)
        with scope:
            await self._run_body(job)

    async def _run_body(self, job: Job) -> None:
        """The native task's body: never lets an exception reach the nursery.

        On asyncio the native task is the cancel handle and this is the
        whole body; on trio it runs inside :meth:`_run_in_scope`.
        """
        job.entered = True
        record = job.record
        if record.cancel_reason is not None:
            # Cancelled before it ever started: no task:started, attempt=0.
            if job.coro is not None:
                job.coro.close()
                job.coro = None
            await self._end_cancelled(job)
            return
        try:
            if job.func is None:
                # The hot path: a plain async task, its coroutine made at spawn.
                job.start()
                self.pending -= 1
                self.running += 1
                if not self.emitter.quiet:
                    await self._emit(job, "task:started")
                coro = job.coro
                job.coro = None
                result = await coro
            else:
                result = await self._run_attempts(job)
        except BaseException as exc:
            await self._end_exc(job, exc)
        else:
            if _cancel_requested(record):
                # cancel() said yes, but the body returned before the
                # cancellation reached it (trio delivers it at the next
                # checkpoint): the caller's request wins, as on asyncio.
                await self._end_cancelled(job)
                return
            previous = job.settle(_SUCCEEDED)
            if previous is None:
                return
            if previous is RUNNING:
                self.running -= 1
            else:
                self.pending -= 1
            self.succeeded += 1
            record.result = result
            if self.emitter.wants_success:
                await self._emit(job, "task:succeeded")
            self._retire(job)

    async def _run_attempts(self, job: Job) -> Any:
        record = job.record
        options = record.options
        retry = options.retry
        timeout = options.timeout
        delay = 0.0
        while True:
            await self._acquire(job)
            try:
                first = record.attempts == 0
                self._start(job)
                if first and not self.emitter.quiet:
                    await self._emit(job, "task:started")
                try:
                    if timeout is None:
                        return await self._call(job)
                    with anyio.fail_after(timeout) as deadline:
                        return await self._call(job)
                except Exception as exc:
                    error = exc
                    if timeout is not None and deadline.cancel_called:
                        error = timeout_error(record.name, timeout, exc)
                    if (
                        retry is None
                        or record.attempts >= retry.attempts
                        or not isinstance(error, retry.on)
                        or record.cancel_reason is not None
                    ):
                        if error is exc:
                            raise
                        raise error from None
                    delay = retry.delay(record.attempts)
                    job.to_pending()
                    self.running -= 1
                    self.pending += 1
                    await self._emit(
                        job, "task:retrying", error, {"retry_in_s": round(delay, 3)}
                    )
            finally:
                self._release(job)
            await anyio.sleep(delay)

    async def _call(self, job: Job) -> Any:
        if job.is_async:
            coro = job.coro
            job.coro = None
            if coro is None:  # a retry: make a fresh coroutine
                assert job.func is not None
                coro = job.func(*job.args, **job.kwargs)
            return await coro
        job.thread_done = False
        return await anyio.to_thread.run_sync(
            _in_thread, job, abandon_on_cancel=True, limiter=self._no_limit
        )

    async def _acquire(self, job: Job) -> None:
        # A sync task stays PENDING until a worker thread is free for it.
        if not job.is_async:
            await self.threads.acquire_on_behalf_of(job)

    def _release(self, job: Job) -> None:
        if not job.is_async:
            self.threads.release_on_behalf_of(job)

    def _start(self, job: Job) -> None:
        job.start()
        self.pending -= 1
        self.running += 1

    # -- outcomes ------------------------------------------------------------

    def _settle(self, job: Job, state: TaskState) -> bool:
        """Move to the terminal ``state`` and count it; False if it already ended."""
        previous = job.settle(state)
        if previous is None:
            return False
        if previous is RUNNING:
            self.running -= 1
        else:
            self.pending -= 1
        if state is _SUCCEEDED:
            self.succeeded += 1
        elif state is _FAILED:
            self.failed += 1
        else:
            self.cancelled += 1
        return True

    async def _end_exc(self, job: Job, exc: BaseException) -> None:
        record = job.record
        if isinstance(exc, self.backend.cancelled_exc):
            ours = record.cancel_reason is not None
            if not ours:
                job.record_cancel_reason("cancelled from outside the supervisor")
            await self._end_cancelled(job)
            # On trio this re-raises so that the task's scope absorbs it; on
            # asyncio it un-cancels our own cancellation (re-raising others).
            self.backend.absorb_cancel(exc, ours=ours)
            return
        if not self._settle(job, _FAILED):
            return
        record.error = exc
        await self._emit(job, "task:failed", exc)
        self._retire(job)
        if not isinstance(exc, Exception):
            # KeyboardInterrupt, SystemExit, ...: recorded, then they stop the
            # supervisor as they would stop a trio nursery.
            self.on_fatal(exc, record)

    async def _end_cancelled(self, job: Job) -> None:
        record = job.record
        was_running_thread = (
            not job.is_async and record.state is RUNNING and not job.thread_done
        )
        if not self._settle(job, _CANCELLED):
            return
        record.abandoned = was_running_thread
        details: dict[str, Any] = {"reason": record.cancel_reason}
        if was_running_thread:
            details["abandoned"] = True
        await self._emit(job, "task:cancelled", None, details)
        self._retire(job)

    async def abandon(self, job: Job) -> None:
        """Give up on a cancelled task that did not end in time (SPEC 3).

        The record ends ``CANCELLED`` and ``abandoned``; if the task's code
        wakes up later, the terminal transition ignores its outcome.
        """
        job.record_cancel_reason("shutdown")
        if self._settle(job, _CANCELLED):
            record = job.record
            record.abandoned = True
            details = {"reason": record.cancel_reason, "abandoned": True}
            await self._emit(job, "task:cancelled", None, details)
            self._retire(job)

    def _retire(self, job: Job) -> None:
        """Move an ended task from the live table to the bounded history."""
        record = job.record
        task_id = record.task_id
        if self.live.get(task_id) is job:
            del self.live[task_id]
        freed = job.slot
        job.slot = False
        job.release()
        if self.history_limit:
            history = self.history
            history[task_id] = record
            if len(history) > self.history_limit:
                history.popitem(last=False)
            if self.history_ttl is not None:
                self._expiry.append((time.monotonic(), task_id, record))
                self.expire()
        if freed:
            self.slots += 1  # type: ignore[operator]
            self._dispatch()
        if not self.live and self._idle is not None:
            self._idle.set()
            self._idle = None

    def expire(self) -> None:
        """Forget finished records older than ``history_ttl`` seconds."""
        ttl = self.history_ttl
        expiry = self._expiry
        if ttl is None or not expiry:
            return
        horizon = time.monotonic() - ttl
        history = self.history
        while expiry and expiry[0][0] <= horizon:
            _, task_id, record = expiry.popleft()
            if history.get(task_id) is record:
                del history[task_id]

    # -- events --------------------------------------------------------------

    def event(
        self,
        job: Job,
        name: str,
        error: BaseException | None = None,
        details: Mapping[str, Any] = _NO_DETAILS,
    ) -> TaskEvent:
        """The record of one transition of ``job``'s task, as it stands now."""
        record = job.record
        return make_event(
            name,
            record.task_id,
            record.name,
            self.name,
            record.state,
            record.attempts,
            record.duration_s,
            error,
            details,
        )

    async def _emit(
        self,
        job: Job,
        name: str,
        error: BaseException | None = None,
        details: Mapping[str, Any] = _NO_DETAILS,
    ) -> None:
        if error is not None:
            # Failures, retries and restarts show where the task was, not
            # the runner's or the service loop's frames above it.
            error.__traceback__ = user_frames(error.__traceback__)
        await self.emitter.emit(self.event(job, name, error, details))

    async def report(
        self,
        job: Job,
        name: str,
        error: BaseException | None,
        details: Mapping[str, Any],
    ) -> None:
        """Emit a non-terminal event of a live task (services' restarts)."""
        await self._emit(job, name, error, details)


def discard(job: Job) -> None:
    """Undo a spawn that will not happen: close its coroutine unawaited."""
    if job.coro is not None:
        job.coro.close()
        job.coro = None


def _cancel_requested(record: Record) -> bool:
    # A function, not an inline test: cancel() may set the reason while the
    # body awaits, and type checkers would narrow the attribute across it.
    return record.cancel_reason is not None


def _in_thread(job: Job) -> Any:
    try:
        assert job.func is not None
        result = job.func(*job.args, **job.kwargs)
    finally:
        job.thread_done = True
    if hasattr(result, "__await__"):
        close = getattr(result, "close", None)
        if close is not None:
            close()
        raise TypeError(
            f"{job.record.name!r} was run in a worker thread as a plain function but "
            f"returned an awaitable ({type(result).__name__}); declare it with "
            "`async def` (or pass the async function itself, not a wrapper) so "
            "that the supervisor awaits it"
        )
    return result
