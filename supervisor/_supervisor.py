"""The :class:`Supervisor`: lifecycle, spawning and inspection.

Lifetimes. A supervisor is single-use: ``NEW → RUNNING → CLOSING → CLOSED``.
``startup()`` opens the app-scoped nursery in the calling task (the ASGI
lifespan task) and ``shutdown()`` closes it there; ``async with sup:`` does
both around a block. Tasks never outlive the supervisor: shutdown drains them
for ``shutdown_timeout`` seconds, cancels what is left, gives cancelled tasks
a short grace to unwind, and reports every one of them.
"""

from __future__ import annotations

import contextvars
import enum
import threading
import uuid
from collections.abc import Callable, Coroutine, Mapping
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

import anyio
import anyio.from_thread
import anyio.lowlevel
import structlog

from . import _prepare, _registry, _services
from ._backend import current_backend
from ._checks import check_limit, check_seconds
from ._events import EventHandler, EventSink, debug_enabled, safe_log
from ._records import ShutdownReport, SupervisorStats, TaskTable
from ._runner import Runner
from ._services import GiveUp, Restart, Service
from ._shutdown import drain_and_cancel
from ._spawning import Spawner
from ._task import DEFAULT_OPTIONS, BackgroundTask, Retry, TaskOptions
from .exceptions import (
    Overloaded,
    SupervisorClosed,
    SupervisorError,
    SupervisorNotStarted,
)

__all__ = ["Supervisor"]

P = ParamSpec("P")
T = TypeVar("T")

_default_logger = structlog.get_logger("supervisor")


class _Phase(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    CLOSING = "closing"
    CLOSED = "closed"


class Supervisor:
    """Owns every background task of an application, from spawn to report.

    See :doc:`/concepts` for the lifecycle. In short::

        sup = Supervisor(name="app", shutdown_timeout=10)
        async with sup:  # or: await sup.startup() ... await sup.shutdown()
            task = await sup.spawn(send_email, to="a@example.com")

    Per-task options (name, task id, timeout, retry, shield) never mix with
    the task function's arguments: use :meth:`options`. Bad values raise
    here, at construction, not at the first spawn.

    :param name: Names the supervisor in every log line and event
        (``supervisor=...``) and in the errors it raises; a non-empty str.
    :param shutdown_timeout: Seconds that :meth:`shutdown` (and the end of
        ``async with``) lets running and pending tasks finish on their own
        before it cancels the rest with reason ``"shutdown"``; ``0`` cancels
        at once. ``shutdown(timeout=...)`` overrides it for one call.
    :param max_concurrency: At most this many tasks ``RUNNING`` at once; the
        others wait ``PENDING`` and start in spawn order (FIFO), each in its
        own spawner's context. None: no limit. Services do not count.
    :param max_pending: At most this many tasks waiting for a
        ``max_concurrency`` slot (or a worker thread); then :meth:`spawn`
        waits for room while :meth:`spawn_nowait` and
        :meth:`spawn_threadsafe` raise :class:`Overloaded`. Needs
        ``max_concurrency``. None: no limit.
    :param thread_limit: At most this many sync (plain ``def``) tasks in
        worker threads at once: an int, or an ``anyio.CapacityLimiter`` to
        share the threads with other code. A sync task waiting for a thread
        is ``PENDING``.
    :param history: How many finished task records :attr:`tasks` and
        :meth:`get` keep for lookup, the oldest forgotten first; ``0`` keeps
        none. Live tasks are always kept, and :meth:`stats` totals never
        shrink with the history.
    :param on_event: Called as ``on_event(event_name, data)`` for every
        ``task:*`` and ``service:*`` event, ``data`` a plain dict (e.g.
        QakeAPI's ``app.emit``). Sync or async; an awaitable it returns is
        awaited in the task that emits, so one task's events arrive in
        order. One that raises is logged and later events still flow.
        None: no handler.
    :param logger: The structlog logger every line goes to; default
        ``structlog.get_logger("supervisor")``. The library never configures
        structlog: your application does. Failures are logged at error,
        cancellations and retries at warning, successes at debug.
    :param event_timeout: Seconds an awaitable returned by ``on_event`` may
        take per event before it is cut off and logged
        (``supervisor:event_handler_timeout``); positive.
    """

    def __init__(
        self,
        name: str = "app",
        *,
        shutdown_timeout: float = 10.0,
        max_concurrency: int | None = None,
        max_pending: int | None = None,
        thread_limit: int | anyio.CapacityLimiter = 40,
        history: int = 1000,
        on_event: EventHandler | None = None,
        logger: Any = None,
        event_timeout: float = 5.0,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"Supervisor name must be a non-empty str, got {name!r}")
        self.name = name
        self.shutdown_timeout = check_seconds("shutdown_timeout", shutdown_timeout)
        self.max_concurrency = check_limit("max_concurrency", max_concurrency)
        self.max_pending = check_limit("max_pending", max_pending)
        if self.max_pending is not None and self.max_concurrency is None:
            raise ValueError(
                f"max_pending={max_pending!r} needs max_concurrency: without a "
                "concurrency limit no task ever waits. Set max_concurrency too, or "
                "drop max_pending"
            )
        if isinstance(thread_limit, int | bool) and not isinstance(thread_limit, bool):
            check_limit("thread_limit", thread_limit)
        elif not isinstance(thread_limit, anyio.CapacityLimiter):
            raise TypeError(
                f"thread_limit must be a positive int or an anyio.CapacityLimiter, "
                f"got {thread_limit!r}"
            )
        self.thread_limit = thread_limit
        if isinstance(history, bool) or not isinstance(history, int) or history < 0:
            raise ValueError(
                f"history must be an int >= 0 (finished tasks kept), got {history!r}"
            )
        self.history = history
        if on_event is not None and not callable(on_event):
            raise TypeError(
                f"on_event must be a callable (event_name, data), got {on_event!r}"
            )
        self.on_event = on_event
        self.event_timeout = check_seconds(
            "event_timeout", event_timeout, zero_ok=False
        )
        self.logger = _default_logger if logger is None else logger

        self._phase = _Phase.NEW
        self._runner: Runner | None = None
        self._host: anyio.TaskInfo | None = None
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._loop_thread: int | None = None
        self._body_scope: anyio.CancelScope | None = None
        self._fatal: BaseException | None = None
        # Why the supervisor stopped itself (fatal error, a service gave up).
        self._stop_reason: str | None = None
        self._shutdown_started = False
        self._report: ShutdownReport | None = None
        self._id_prefix = uuid.uuid4().hex[:8]
        self._seq = 0
        self._tasks = TaskTable({}, {})

    # -- lifecycle ---------------------------------------------------------

    async def startup(self) -> None:
        """Open the supervisor's nursery in the calling (lifespan) task.

        Idempotent: on a started supervisor it does nothing, from any task
        (QakeAPI runs startup hooks twice). After shutdown it raises
        :class:`SupervisorError`: supervisors are single-use.
        """
        if self._phase is _Phase.RUNNING:
            return
        if self._phase is _Phase.STARTING:
            raise SupervisorError(
                f"Supervisor {self.name!r} is being started by another task; await "
                "startup() once, in the app's lifespan"
            )
        if self._phase is not _Phase.NEW:
            raise SupervisorError(
                f"Supervisor {self.name!r} is {self._phase.value}; a supervisor is "
                "single-use: create a new Supervisor for a new lifespan"
            )
        self._phase = _Phase.STARTING
        try:
            backend = current_backend()
            threads = self.thread_limit
            if not isinstance(threads, anyio.CapacityLimiter):
                threads = anyio.CapacityLimiter(threads)
            mc, mp = self.max_concurrency, self.max_pending
            runner = Runner(
                name=self.name,
                backend=backend,
                logger=self.logger,
                sink=(
                    None
                    if self.on_event is None
                    else EventSink(self.on_event, self.logger, self.event_timeout)
                ),
                slots=mc,
                threads=threads,
                admission=None if mp is None else anyio.CapacityLimiter(mp),
                history_limit=self.history,
                on_fatal=self._on_fatal,
                log_success=debug_enabled(self.logger),
            )
            self._host = anyio.get_current_task()
            self._token = anyio.lowlevel.current_token()
            self._loop_thread = threading.get_ident()
            await backend.open()
        except BaseException:
            self._phase = _Phase.NEW
            raise
        self._runner = runner
        self._tasks = TaskTable(runner.live, runner.history)
        self._phase = _Phase.RUNNING
        _registry.register(self)
        safe_log(self.logger, "info", "supervisor:started", supervisor=self.name)

    async def shutdown(self, timeout: float | None = None) -> ShutdownReport:
        """Refuse new work, drain, cancel what is left, and report.

        Running and pending tasks get ``timeout`` seconds (default
        ``shutdown_timeout``) to finish; then the rest are cancelled with
        reason ``"shutdown"`` and get up to 0.5 s to unwind. Sync tasks whose
        threads are still busy are reported as abandoned; shielded tasks are
        waited for. Idempotent: later calls return the same report. Must be
        awaited in the task (and cancel-scope nesting) that called
        :meth:`startup`; pass ``timeout=`` rather than wrapping it in your
        own ``move_on_after``.
        """
        if timeout is not None:
            timeout = check_seconds("shutdown(timeout=...)", timeout)
        if self._phase is _Phase.CLOSED:
            return self._report or ShutdownReport()
        if self._phase is _Phase.NEW:
            self._phase = _Phase.CLOSED
            self._report = ShutdownReport()
            return self._report
        if self._phase is _Phase.STARTING:
            raise SupervisorError(
                f"Supervisor {self.name!r} is still starting; await startup() "
                "before shutdown()"
            )
        self._check_host("shutdown()")
        runner = self._runner
        assert runner is not None
        if not self._shutdown_started:
            # Check before anything changes, so that a misplaced call can be
            # retried from the right place.
            runner.backend.check_nesting()
            self._shutdown_started = True
        self._phase = _Phase.CLOSING
        try:
            report = await drain_and_cancel(
                runner,
                self.shutdown_timeout if timeout is None else timeout,
                logger=self.logger,
                name=self.name,
            )
        finally:
            # Every task has ended by now: the supervisor is closed even if
            # closing the nursery re-raises the host's own cancellation.
            self._phase = _Phase.CLOSED
            _registry.unregister(self)
            # Not inside a scope of ours: closing the nursery exits the scope
            # startup() entered, which must be the innermost one here.
            await runner.backend.close()
        self._report = report
        safe_log(
            self.logger,
            "warning" if report.cancelled else "info",
            "supervisor:shutdown",
            supervisor=self.name,
            drained=report.completed,
            cancelled_at_deadline=len(report.cancelled),
            abandoned=len(report.abandoned),
            shielded=len(report.shielded),
            duration_s=round(report.duration_s, 6),
            totals=self.stats().totals(),
        )
        if self._fatal is not None:
            raise self._fatal
        return report

    async def __aenter__(self) -> Supervisor:
        if self._phase is not _Phase.NEW:
            raise SupervisorError(
                f"Supervisor {self.name!r} is already {self._phase.value}: "
                "`async with` "
                "runs a supervisor once. Create a new Supervisor, or use startup()/"
                "shutdown() when a framework starts it for you"
            )
        await self.startup()
        self._body_scope = anyio.CancelScope()
        self._body_scope.__enter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        scope, self._body_scope = self._body_scope, None
        assert scope is not None
        swallowed = bool(scope.__exit__(exc_type, exc, tb))
        failed_body = exc is not None and not swallowed
        # Like a nursery: a body that raised cancels the work at once.
        await self.shutdown(timeout=0 if failed_body else None)
        return swallowed

    def _on_fatal(self, exc: BaseException, task: BackgroundTask[Any]) -> None:
        """A task raised KeyboardInterrupt/SystemExit/...: stop, as trio would."""
        if self._fatal is None:
            self._fatal = exc
        self._stop(
            f"supervisor stopped: task {task.name!r} raised {type(exc).__name__}"
        )

    def _stop(self, reason: str, *, spare: BackgroundTask[Any] | None = None) -> None:
        """Stop from inside: refuse spawns, cancel the others, wake the body.

        Shared by fatal errors and services that give up with
        ``give_up="shutdown"``; ``spare`` is a task that is ending by itself.
        The host still calls shutdown() (``async with`` does) to drain and
        report; only a fatal error makes that re-raise.
        """
        if self._phase is _Phase.RUNNING:
            self._phase = _Phase.CLOSING
            self._stop_reason = reason
        runner = self._runner
        assert runner is not None
        for other in list(runner.live.values()):
            if other is not spare and not other.options.shield:
                other.cancel(reason)
        if self._body_scope is not None:
            self._body_scope.cancel(reason)

    def _check_host(self, what: str) -> None:
        host = self._host
        if host is not None and anyio.get_current_task() != host:
            raise SupervisorError(
                f"{what} of Supervisor {self.name!r} was called from a different task "
                f"than startup() ({host.name!r}); call it from the same lifespan task, "
                "or use `async with sup:` so both happen in one place"
            )

    # -- spawning ----------------------------------------------------------

    def options(
        self,
        *,
        name: str | None = None,
        task_id: str | None = None,
        timeout: float | None = None,
        retry: Retry | None = None,
        shield: bool = False,
    ) -> Spawner:
        """A spawner whose tasks get these options; arguments stay the function's.

        ``timeout`` (seconds per attempt) fails the task with ``TimeoutError``;
        ``retry`` retries chosen exceptions with backoff; ``shield`` keeps the
        task from being cancelled at the shutdown deadline.
        """
        return Spawner(
            self,
            TaskOptions(
                name=name, task_id=task_id, timeout=timeout, retry=retry, shield=shield
            ),
        )

    # Typed so that a checker matches the arguments against ``func`` (ParamSpec)
    # and knows the result type of ``task.wait()``.
    @overload
    async def spawn(
        self,
        func: Callable[P, Coroutine[Any, Any, T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> BackgroundTask[T]: ...
    @overload
    async def spawn(
        self, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> BackgroundTask[T]: ...
    async def spawn(
        self, func: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> BackgroundTask[Any]:
        """Start ``func(*args, **kwargs)`` in the background and return its record.

        Returns before ``func`` runs (the task is ``PENDING``). ``func`` may be
        ``async def`` or a plain function (run in a worker thread under
        ``thread_limit``). Waits only when ``max_pending`` tasks are already
        waiting. Raises :class:`SupervisorNotStarted`, :class:`SupervisorClosed`,
        ``TypeError`` for what cannot be spawned, and :class:`SupervisorError`
        for a task id in use.
        """
        return await self._spawn(func, args, kwargs, DEFAULT_OPTIONS)

    @overload
    def spawn_nowait(
        self,
        func: Callable[P, Coroutine[Any, Any, T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> BackgroundTask[T]: ...
    @overload
    def spawn_nowait(
        self, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> BackgroundTask[T]: ...
    def spawn_nowait(
        self, func: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> BackgroundTask[Any]:
        """Like :meth:`spawn`, synchronous: raises :class:`Overloaded`, never waits."""
        return self._spawn_nowait(func, args, kwargs, DEFAULT_OPTIONS)

    def spawn_threadsafe(
        self, func: Callable[P, Any], /, *args: P.args, **kwargs: P.kwargs
    ) -> str:
        """Spawn from any thread (e.g. a sync endpoint); returns the task id.

        The task inherits the calling thread's contextvars. Raises
        :class:`Overloaded` rather than waiting for room. From the event loop
        thread itself it spawns directly, like :meth:`spawn_nowait`.
        """
        return self._spawn_threadsafe(func, args, kwargs, DEFAULT_OPTIONS)

    async def start_service(
        self,
        func: Callable[..., Any],
        /,
        *args: Any,
        restart: Restart = "permanent",
        max_restarts: int = 3,
        period: float = 5.0,
        backoff: float = 0.0,
        name: str | None = None,
        give_up: GiveUp = "log",
    ) -> Service:
        """Run ``func(*args)`` for the app's lifetime, restarted on crash (OTP style).

        ``restart``: ``"permanent"`` restarts after a crash or a return,
        ``"transient"`` after a crash only, ``"temporary"`` never. More than
        ``max_restarts`` restarts within ``period`` seconds and the service
        gives up: a ``service:gave_up`` error line and event, its record ends
        ``FAILED``, and with ``give_up="shutdown"`` the supervisor stops
        (spawns refused, other tasks cancelled, the ``async with`` body
        woken). ``backoff`` seconds pass before each restart. Cancellation
        (shutdown, :meth:`Service.cancel`) is never a crash.

        Like ``nursery.start(fn, *args)``, positional arguments only, so the
        options never collide with ``func``'s keywords: pass keywords with
        ``functools.partial(func, key=value)``. If ``func`` takes a
        ``task_status`` parameter, this waits until the first run calls
        ``task_status.started(value)`` and the handle's ``value`` is that
        value; a first run that crashes or returns first raises
        :class:`ServiceFailedToStart` (not restarted). Services run outside
        ``max_concurrency``/``max_pending``: they would hold a slot forever.
        """
        return await _services.start_service(
            self,
            func,
            args,
            restart=restart,
            max_restarts=max_restarts,
            period=period,
            backoff=backoff,
            name=name,
            give_up=give_up,
        )

    async def _spawn(
        self,
        func: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: TaskOptions,
    ) -> BackgroundTask[Any]:
        runner, task, admitted = self._try_spawn(func, args, kwargs, options)
        if admitted:
            return task
        # max_pending tasks are queued: wait for a place in the queue.
        admission = runner.admission
        assert admission is not None
        try:
            await admission.acquire_on_behalf_of(task)
        except BaseException:
            _discard(task)
            raise
        try:
            self._open_runner()  # it may have closed while we waited
            self._check_task_id(task)
        except SupervisorError:
            admission.release_on_behalf_of(task)
            _discard(task)
            raise
        runner.enqueue(task)
        return task

    def _spawn_nowait(
        self,
        func: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: TaskOptions,
    ) -> BackgroundTask[Any]:
        _, task, admitted = self._try_spawn(func, args, kwargs, options)
        if not admitted:
            _discard(task)
            raise Overloaded(
                f"Supervisor {self.name!r} is full: max_concurrency="
                f"{self.max_concurrency} tasks running and max_pending="
                f"{self.max_pending} waiting. Use `await sup.spawn(...)` to wait for "
                "room, shed the load (e.g. answer 503), or raise the limits"
            )
        return task

    def _spawn_threadsafe(
        self,
        func: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: TaskOptions,
    ) -> str:
        if self._token is None or self._phase is _Phase.NEW:
            self._open_runner()  # raises the right error
        if threading.get_ident() == self._loop_thread:
            # Already on the loop (e.g. a sync helper called from async code):
            # hopping through from_thread would deadlock, and is not needed.
            return self._spawn_nowait(func, args, kwargs, options).task_id
        context = contextvars.copy_context()
        try:
            task = anyio.from_thread.run_sync(
                context.run,
                self._spawn_nowait,
                func,
                args,
                kwargs,
                options,
                token=self._token,
            )
        except anyio.RunFinishedError:
            raise SupervisorClosed(
                f"Supervisor {self.name!r}'s event loop has finished; spawn before "
                "the app shuts down"
            ) from None
        return task.task_id

    def _open_runner(self) -> Runner:
        if self._phase is _Phase.RUNNING:
            assert self._runner is not None
            return self._runner
        if self._phase in (_Phase.NEW, _Phase.STARTING):
            raise SupervisorNotStarted(
                f"Supervisor {self.name!r} has not been started; start it in your "
                "app's lifespan with `async with sup:` or `await sup.startup()`, or "
                "use an integration (supervisor.asgi, supervisor.starlette, ...)"
            )
        if self._stop_reason is not None:
            raise SupervisorClosed(
                f"Supervisor {self.name!r} is closed to new tasks: "
                f"{self._stop_reason}. See that task's log line; the app's "
                "lifespan shutdown will still drain and report the rest"
            )
        raise SupervisorClosed(
            f"Supervisor {self.name!r} is shut down; spawn tasks before lifespan "
            "shutdown, or start a new Supervisor"
        )

    def _make_task(
        self,
        func: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: TaskOptions,
    ) -> BackgroundTask[Any]:
        task_id = options.task_id
        if task_id is None:
            self._seq += 1
            task_id = f"{self._id_prefix}-{self._seq}"
        return _prepare.make_task(
            self, func, args, kwargs, task_id=task_id, options=options
        )

    def _check_task_id(self, task: BackgroundTask[Any]) -> None:
        """A caller-chosen id must not belong to a live task (a finished one's may)."""
        if task.options.task_id is None:
            return
        runner = self._runner
        assert runner is not None
        if task.task_id in runner.live:
            raise SupervisorError(
                f"task_id {task.task_id!r} is already used by a live task of "
                f"Supervisor {self.name!r}; pick another id, or wait for that task "
                "to finish (a finished task's id may be reused)"
            )

    def _try_spawn(
        self,
        func: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: TaskOptions,
    ) -> tuple[Runner, BackgroundTask[Any], bool]:
        """Check, build and start (or queue) a task if there is room, at once."""
        runner = self._runner
        if self._phase is not _Phase.RUNNING or runner is None:
            runner = self._open_runner()  # raises the right error
        task = self._make_task(func, args, kwargs, options)
        if options.task_id is not None:
            try:
                self._check_task_id(task)
            except SupervisorError:
                _discard(task)
                raise
        return runner, task, runner.try_admit(task)

    # -- inspection --------------------------------------------------------

    @property
    def tasks(self) -> Mapping[str, BackgroundTask[Any]]:
        """Live tasks plus the last ``history`` finished ones, by id (read-only)."""
        return self._tasks

    def get(self, task_id: str) -> BackgroundTask[Any] | None:
        """The task with this id, or None if unknown or forgotten."""
        return self._tasks.get(task_id)

    def stats(self) -> SupervisorStats:
        """Counts by state now, and totals since startup."""
        r = self._runner
        if r is None:
            return SupervisorStats(0, 0, 0, 0, 0, 0)
        return SupervisorStats(
            pending=r.pending,
            running=r.running,
            spawned=r.spawned,
            succeeded=r.succeeded,
            failed=r.failed,
            cancelled=r.cancelled,
        )

    async def wait_idle(self) -> None:
        """Return once nothing is ``PENDING`` or ``RUNNING`` and all events are out."""
        if self._runner is None:
            await anyio.lowlevel.checkpoint()
            return
        await self._runner.wait_idle()

    @property
    def running(self) -> bool:
        """True between startup and the start of shutdown."""
        return self._phase is _Phase.RUNNING

    @property
    def closed(self) -> bool:
        """True once shutdown has begun (spawning raises SupervisorClosed)."""
        return self._phase in (_Phase.CLOSING, _Phase.CLOSED)

    def __repr__(self) -> str:
        r = self._runner
        counts = "" if r is None else f" running={r.running} pending={r.pending}"
        return f"<supervisor.Supervisor {self.name!r}{counts} {self._phase.value}>"


def _discard(task: BackgroundTask[Any]) -> None:
    """Undo a spawn that will not happen: close its coroutine unawaited."""
    if task._coro is not None:
        task._coro.close()
        task._coro = None
