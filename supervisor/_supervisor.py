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
import math
import threading
from collections.abc import Callable, Coroutine, Mapping
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

import anyio
import anyio.from_thread
import anyio.lowlevel
import attrs
import structlog

from . import _registry, _services
from ._backend import current_backend
from ._config import SupervisorConfig
from ._events import (
    Emitter,
    EventHandler,
    HandlerListener,
    Listener,
    LogListener,
    safe_log,
)
from ._options import DEFAULT_OPTIONS, Retry, TaskOptions
from ._records import ShutdownReport, SupervisorStats, make_report, make_stats
from ._runner import Runner, discard
from ._services import GiveUp, Restart, Service
from ._shutdown import drain_and_cancel
from ._spawning import Spawner, make_spawner
from ._task import BackgroundTask
from .exceptions import (
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
    :param history_ttl: Seconds a finished record stays in the history at
        most, beside the ``history`` count; None: no age limit.
    :param on_event: Called as ``on_event(event_name, data)`` for every
        ``task:*`` and ``service:*`` event, ``data`` a plain dict (e.g.
        QakeAPI's ``app.emit``). Sync or async; an awaitable it returns is
        awaited in the task that emits, so one task's events arrive in
        order. One that raises is logged and later events still flow.
        None: no handler.
    :param logger: The structlog logger every line goes to; default
        ``structlog.get_logger("supervisor")``. The library never configures
        structlog: your application does. Failures are logged at error,
        cancellations and retries at warning, successes at ``success_level``.
    :param event_timeout: Seconds an awaitable returned by ``on_event`` may
        take per event before it is cut off and logged
        (``supervisor:event_handler_timeout``); positive.
    :param success_level: The level of ``task:succeeded`` lines, ``"debug"``
        (the default: successes are most of the traffic) or ``"info"`` (every
        task then leaves exactly one line at the usual INFO configuration).
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
        history_ttl: float | None = None,
        on_event: EventHandler | None = None,
        logger: Any = None,
        event_timeout: float = 5.0,
        success_level: str = "debug",
    ) -> None:
        self._config = SupervisorConfig(
            name=name,
            shutdown_timeout=shutdown_timeout,
            max_concurrency=max_concurrency,
            max_pending=max_pending,
            thread_limit=thread_limit,
            history=history,
            history_ttl=history_ttl,
            on_event=on_event,
            logger=_default_logger if logger is None else logger,
            event_timeout=event_timeout,
            success_level=success_level,
        )
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
        # Listeners added before startup, attached to the emitter then.
        self._listeners: list[Listener] = []
        # Handles start_service() returned, for the read-only ``services`` view.
        self._services: list[Service] = []

    # -- configuration (read-only once built; see SupervisorConfig) ----------

    @property
    def config(self) -> SupervisorConfig:
        """The validated configuration this supervisor was built with."""
        return self._config

    @property
    def name(self) -> str:
        """The name in every log line and event."""
        return self._config.name

    @property
    def shutdown_timeout(self) -> float:
        """Seconds :meth:`shutdown` lets work drain before cancelling it."""
        return self._config.shutdown_timeout

    @property
    def max_concurrency(self) -> int | None:
        """At most this many tasks run at once (None: no limit)."""
        return self._config.max_concurrency

    @property
    def max_pending(self) -> int | None:
        """At most this many tasks wait for a slot (None: no limit)."""
        return self._config.max_pending

    @property
    def thread_limit(self) -> int | anyio.CapacityLimiter:
        """Threads for sync tasks: a count or the limiter given."""
        return self._config.thread_limit

    @property
    def history(self) -> int:
        """How many finished tasks are kept for lookup."""
        return self._config.history

    @property
    def logger(self) -> Any:
        """The structlog logger every line goes to."""
        return self._config.logger

    @property
    def on_event(self) -> EventHandler | None:
        """The app's ``on_event(event_name, data)`` handler, or None.

        It may be set until the supervisor starts (an integration wiring
        QakeAPI's ``app.emit``, for instance); from then on it is fixed.
        """
        handler: EventHandler | None = self._config.on_event
        return handler

    @on_event.setter
    def on_event(self, handler: EventHandler | None) -> None:
        if self._phase is not _Phase.NEW:
            raise SupervisorError(
                f"Supervisor {self.name!r} is {self._phase.value}: set on_event "
                "before startup(), or add a listener with sup.add_listener()"
            )
        self._config = attrs.evolve(self._config, on_event=handler)

    # -- listeners -----------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` with every :class:`~supervisor.TaskEvent` from now.

        For instrumentation (metrics, tracing, tests): the listener is called
        synchronously in the task whose transition it reports, so it must
        not block; one that raises is logged once and removed. Works before
        startup (it is attached then) and while running.
        """
        if not callable(listener):
            raise TypeError(
                f"add_listener() takes a callable of one TaskEvent, got {listener!r}"
            )
        if self._runner is not None:
            self._runner.emitter.add(listener)
        elif listener not in self._listeners:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> bool:
        """Stop calling ``listener``; False if it was not listening."""
        if self._runner is not None:
            return self._runner.emitter.remove(listener)
        try:
            self._listeners.remove(listener)
        except ValueError:
            return False
        return True

    # -- lifecycle -----------------------------------------------------------

    async def startup(self) -> None:
        """Open the supervisor's nursery in the calling (lifespan) task.

        Idempotent: on a started supervisor it does nothing, from any task
        (QakeAPI runs startup hooks twice). After shutdown it raises
        :class:`SupervisorError`: supervisors are single-use.
        """
        if self._phase is _Phase.RUNNING:
            await anyio.lowlevel.checkpoint()
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
        config = self._config
        try:
            backend = current_backend()
            threads = config.thread_limit
            if not isinstance(threads, anyio.CapacityLimiter):
                threads = anyio.CapacityLimiter(threads)
            emitter = Emitter(
                LogListener(config.logger, config.success_level),
                None
                if config.on_event is None
                else HandlerListener(
                    config.on_event, config.logger, config.event_timeout
                ),
            )
            for listener in self._listeners:
                emitter.add(listener)
            runner = Runner(
                name=config.name,
                backend=backend,
                emitter=emitter,
                threads=threads,
                max_concurrency=config.max_concurrency,
                max_pending=config.max_pending,
                history=config.history,
                history_ttl=config.history_ttl,
                on_fatal=self._on_fatal,
            )
            self._host = anyio.get_current_task()
            self._token = runner.token
            self._loop_thread = runner.loop_thread
            await backend.open()
        except BaseException:
            self._phase = _Phase.NEW
            raise
        self._runner = runner
        self._listeners.clear()
        self._phase = _Phase.RUNNING
        _registry.register(self)
        safe_log(config.logger, "info", "supervisor:started", supervisor=self.name)

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
            timeout = _check_timeout(timeout)
        if self._phase is _Phase.CLOSED:
            await anyio.lowlevel.checkpoint()
            return self._report or make_report()
        if self._phase is _Phase.NEW:
            self._phase = _Phase.CLOSED
            self._report = make_report()
            await anyio.lowlevel.checkpoint()
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
        runner.closing = True
        try:
            report = await drain_and_cancel(
                runner, self.shutdown_timeout if timeout is None else timeout
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
        stats = runner.stats()
        safe_log(
            self.logger,
            "info" if report.clean else "warning",
            "supervisor:shutdown",
            supervisor=self.name,
            drained=report.completed,
            cancelled_at_deadline=report.cancelled_at_deadline,
            services_stopped=len(report.services),
            abandoned=len(report.abandoned),
            shielded=len(report.shielded),
            duration_s=round(report.duration_s, 6),
            spawned=stats.spawned,
            succeeded=stats.succeeded,
            failed=stats.failed,
            cancelled=stats.cancelled,
        )
        if self._fatal is not None:
            raise self._fatal
        return report

    async def __aenter__(self) -> Supervisor:
        if self._phase is not _Phase.NEW:
            raise SupervisorError(
                f"Supervisor {self.name!r} is already {self._phase.value}: "
                "`async with` runs a supervisor once. Create a new Supervisor, or "
                "use startup()/shutdown() when a framework starts it for you"
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
        runner.closing = True
        runner.cancel_all(reason, spare=spare)
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

    # -- spawning ------------------------------------------------------------

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
        task from being cancelled at the shutdown deadline. Bad values raise
        here, at the call that gave them.
        """
        return make_spawner(
            TaskOptions(
                name=name, task_id=task_id, timeout=timeout, retry=retry, shield=shield
            ),
            self._spawn,
            self._spawn_nowait,
            self._spawn_threadsafe,
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
        ``thread_limit``). A checkpoint, like every trio async call: inside a
        cancelled scope it raises the cancellation and spawns nothing. Waits
        only when ``max_pending`` tasks are already waiting. Raises
        :class:`SupervisorNotStarted`, :class:`SupervisorClosed`,
        ``TypeError`` for what cannot be spawned, and :class:`SupervisorError`
        for a task id in use or a call from another thread.
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
        """Like :meth:`spawn`, synchronous: raises :class:`Overloaded`, never waits.

        Call it from the event loop's thread; from other threads (a sync
        endpoint's worker thread) use :meth:`spawn_threadsafe`.
        """
        runner = self._runner
        if (
            self._phase is not _Phase.RUNNING
            or runner is None
            or threading.get_ident() != self._loop_thread
        ):
            runner = self._usable_runner("spawn_nowait()")
        return runner.spawn_nowait(func, args, kwargs, DEFAULT_OPTIONS)

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
        await anyio.lowlevel.checkpoint()
        service = await _services.start_service(
            self._usable_runner("start_service()"),
            func,
            args,
            restart=restart,
            max_restarts=max_restarts,
            period=period,
            backoff=backoff,
            name=name,
            give_up=give_up,
            stop_supervisor=self._stop,
        )
        # Keep the handles whose records the supervisor still remembers, so
        # a service started and stopped in a loop does not grow the list.
        tasks = self.tasks
        self._services = [s for s in self._services if s.task.task_id in tasks]
        self._services.append(service)
        return service

    async def _spawn(
        self,
        func: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: TaskOptions,
    ) -> BackgroundTask[Any]:
        await anyio.lowlevel.checkpoint()
        runner = self._usable_runner("spawn()")
        job = runner.build(func, args, kwargs, options)
        if runner.admit(job):
            return job.record
        # max_pending tasks are queued: wait (FIFO) for a place in the queue.
        try:
            await runner.wait_for_place(job)
        except BaseException:
            discard(job)
            raise
        try:
            self._usable_runner("spawn()")  # it may have closed while we waited
            runner.check_id(job)
        except SupervisorError:
            runner.give_back(job)
            raise
        runner.admit(job, placed=True)
        return job.record

    def _spawn_nowait(
        self,
        func: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: TaskOptions,
    ) -> BackgroundTask[Any]:
        return self._usable_runner("spawn_nowait()").spawn_nowait(
            func, args, kwargs, options
        )

    def _spawn_threadsafe(
        self,
        func: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: TaskOptions,
    ) -> str:
        if self._token is None or self._phase is _Phase.NEW:
            self._usable_runner("spawn_threadsafe()")  # raises the right error
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
                f"the event loop of Supervisor {self.name!r} has finished; spawn "
                "before the app shuts down"
            ) from None
        return task.task_id

    def _usable_runner(self, call: str) -> Runner:
        """The runner, if ``call`` may use it from here; else the error saying why."""
        if self._phase is _Phase.RUNNING:
            assert self._runner is not None
            if threading.get_ident() != self._loop_thread:
                raise SupervisorError(
                    f"{call} of Supervisor {self.name!r} was called from another "
                    "thread than its event loop's; from a worker thread (a sync "
                    "endpoint, anyio.to_thread) use sup.spawn_threadsafe(func, ...), "
                    "which hands the task to the loop and returns its id"
                )
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

    # -- inspection ----------------------------------------------------------

    @property
    def tasks(self) -> Mapping[str, BackgroundTask[Any]]:
        """Live tasks plus the last ``history`` finished ones, by id (read-only)."""
        runner = self._runner
        return _NO_TASKS if runner is None else runner.tasks

    @property
    def services(self) -> tuple[Service, ...]:
        """The services started since startup, oldest first, running or ended.

        For dashboards and health checks: each :class:`Service` gives its
        record (state, attempts), its restart strategy and its restart count.
        An ended service stays listed while its record is in :attr:`tasks`.
        """
        tasks = self.tasks
        return tuple(s for s in self._services if s.task.task_id in tasks)

    def get(self, task_id: str) -> BackgroundTask[Any] | None:
        """The task with this id, or None if unknown or forgotten."""
        return self.tasks.get(task_id)

    def stats(self) -> SupervisorStats:
        """Counts by state now, and totals since startup (safe from any thread)."""
        runner = self._runner
        if runner is None:
            return make_stats(0, 0, 0, 0, 0, 0)
        return runner.stats()

    async def wait_idle(self) -> None:
        """Return once nothing is ``PENDING`` or ``RUNNING`` and all events are out.

        A checkpoint on every call. Call it from the event loop's thread.
        """
        runner = self._runner
        if runner is None:
            await anyio.lowlevel.checkpoint()
            return
        if threading.get_ident() != self._loop_thread:
            raise SupervisorError(
                f"wait_idle() of Supervisor {self.name!r} was called from another "
                "thread than its event loop's; await it in async code on that loop"
            )
        await runner.wait_idle()

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


_NO_TASKS: Mapping[str, BackgroundTask[Any]] = {}


def _check_timeout(timeout: object) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(
            f"shutdown(timeout=...) takes a number of seconds or None, got {timeout!r}"
        )
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(
            f"shutdown(timeout=...) must be >= 0 seconds (0 cancels at once), got "
            f"{timeout!r}"
        )
    return float(timeout)
