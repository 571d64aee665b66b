"""Long-running services, restarted on crash the way Erlang/OTP does it (SPEC 3).

A service (a queue consumer, a poller) is one :class:`BackgroundTask` for its
whole life: its body, :func:`run_service`, calls the user's function again
and again in the same native task, so the record stays ``RUNNING`` across
restarts, ``attempts`` counts the runs, and the task ends through the
runner's usual path (one terminal log line and event, stats as usual).
Restarting in place rather than spawning a new task per run keeps one id to
look up, keeps the caller's contextvars, and needs nothing from the runner's
hot path.

Restart strategies, as in OTP:

* ``"permanent"``: always restarted, after a crash or a normal return;
* ``"transient"``: restarted after a crash (an ``Exception``) only; a
  return ends it ``SUCCEEDED``;
* ``"temporary"``: never restarted; a crash ends it ``FAILED``, a return
  ``SUCCEEDED``.

Restart intensity: more than ``max_restarts`` restarts within ``period``
seconds (a sliding window over ``anyio.current_time()``) means restarting is
not helping, so the service gives up loudly: one ``service:gave_up`` error
line and event, the record ends ``FAILED`` with the last error, and with
``give_up="shutdown"`` the whole supervisor stops.

Cancellation (shutdown, ``task.cancel()``) is never a crash: a cancelled
service ends ``CANCELLED`` and is not restarted. Nor is one that ends while
the supervisor is shutting down: the drain is waiting for it.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import anyio
import anyio.lowlevel
import attrs

from . import _validate as v
from ._options import TaskOptions
from ._prepare import callable_name, is_async_callable, reject_awaitable
from ._records import made_here
from ._runner import Runner
from ._task import BackgroundTask, Job, TaskState
from .exceptions import ServiceFailedToStart

__all__ = [
    "GiveUp",
    "Restart",
    "Service",
    "ServiceOptions",
    "run_service",
    "start_service",
]

Restart = Literal["permanent", "transient", "temporary"]
GiveUp = Literal["log", "shutdown"]

_KEYWORDS_HINT = (
    "start_service(func, *args) passes positional arguments only, so that its "
    "options never collide with func's own keywords; give keyword arguments with "
    "functools.partial(func, key=value)"
)


@attrs.frozen
class ServiceOptions:
    """How a service is restarted (see :meth:`Supervisor.start_service`)."""

    restart: Restart = attrs.field(
        default="permanent", validator=v.choice(("permanent", "transient", "temporary"))
    )
    max_restarts: int = attrs.field(
        default=3, validator=v.count(meaning="restarts allowed within period")
    )
    period: float = attrs.field(default=5.0, validator=v.seconds(zero_ok=False))
    backoff: float = attrs.field(default=0.0, validator=v.seconds(finite=True))
    name: str | None = attrs.field(default=None, validator=v.optional_str)
    give_up: GiveUp = attrs.field(
        default="log", validator=v.choice(("log", "shutdown"))
    )


v.CALL_NAMES[ServiceOptions] = "start_service"


@attrs.define(eq=False)
class _ServiceState:
    """What the restart loop and the :class:`Service` handle share."""

    func: Callable[..., Awaitable[Any]]
    args: tuple[Any, ...]
    options: ServiceOptions
    runner: Runner
    # Stops the whole supervisor (give_up="shutdown"): the supervisor's own
    # function, so that a service needs nothing else of it.
    stop_supervisor: Callable[..., None]
    # Whether func takes ``task_status``; if so start_service() waits for
    # the first run to call started() (``startup_over`` says it did, or failed).
    wants_status: bool
    job: Job | None = None
    restarts: int = 0
    # Times of the restarts within the last ``period`` seconds.
    window: deque[float] = attrs.Factory(deque)
    startup_over: bool = False
    ready: bool = False
    value: Any = None
    # The scope start_service() waits in; started() cancels it to wake it.
    waiter: anyio.CancelScope | None = None

    def mark_ready(self, value: Any) -> None:
        if self.startup_over:
            return
        self.startup_over = True
        self.ready = True
        self.value = value
        if self.waiter is not None:
            self.waiter.cancel()


class _TaskStatus:
    """The ``task_status`` a service receives: anyio's ``TaskStatus`` shape.

    Only the first run's ``started(value)`` matters: it hands ``value`` to
    ``start_service()``. A restarted run gets a fresh one, whose
    ``started()`` does nothing, so the same code serves every run.
    """

    __slots__ = ("_called", "_state")

    def __init__(self, state: _ServiceState) -> None:
        self._state = state
        self._called = False

    def started(self, value: Any = None) -> None:
        """Report the service ready; ``value`` is returned by ``start_service()``."""
        if self._called:
            raise RuntimeError(
                "task_status.started() was called twice in the same run of a "
                "service; call it once, when the service is ready"
            )
        self._called = True
        self._state.mark_ready(value)  # a no-op once the first run decided


@made_here("start_service() returns one")
@attrs.define(frozen=True, eq=False, repr=False)
class Service:
    """A handle on a running service, returned by :meth:`Supervisor.start_service`.

    ``task`` is the service's :class:`BackgroundTask` record (one for its
    whole life, ``RUNNING`` across restarts, ``attempts`` counting runs);
    ``value`` is what the first run passed to ``task_status.started()``
    (None without readiness). The service belongs to the supervisor: it is
    cancelled at shutdown, or earlier with :meth:`cancel`.
    """

    task: BackgroundTask[Any]
    value: Any
    _state: _ServiceState = attrs.field(alias="state")

    @classmethod
    def _create(cls, *args: Any) -> Service:
        raise NotImplementedError  # replaced by made_here

    @property
    def name(self) -> str:
        """The service's task name."""
        return self.task.name

    @property
    def restart(self) -> Restart:
        """Its restart strategy: ``"permanent"``, ``"transient"`` or ``"temporary"``."""
        return self._state.options.restart

    @property
    def restarts(self) -> int:
        """How many times it has been restarted so far (live count)."""
        return self._state.restarts

    def cancel(self, reason: str = "cancelled by caller") -> bool:
        """Stop the service for good (no restart); its record ends ``CANCELLED``.

        Returns False if it had already ended or was already being cancelled.
        """
        return self.task.cancel(reason)

    def __repr__(self) -> str:
        return (
            f"<supervisor.Service {self.task.name!r} id={self.task.task_id} "
            f"{self.task.state.value} {self._state.options.restart} "
            f"restarts={self._state.restarts}>"
        )


# -- starting --------------------------------------------------------------


async def start_service(
    runner: Runner,
    func: Any,
    args: tuple[Any, ...],
    *,
    stop_supervisor: Callable[..., None],
    **options: Any,
) -> Service:
    """The body of :meth:`Supervisor.start_service`: check, launch, await readiness."""
    _check_function(func)
    wants_status = _check_arguments(func, args)
    config = ServiceOptions(**options)
    state = _ServiceState(
        func=func,
        args=args,
        options=config,
        runner=runner,
        stop_supervisor=stop_supervisor,
        wants_status=wants_status,
        startup_over=not wants_status,
    )
    job = runner.build(
        run_service,
        (state,),
        {},
        TaskOptions(name=config.name or callable_name(func)),
        service=True,
    )
    state.job = job
    task = job.record
    # Launched directly, outside max_concurrency and max_pending: a service
    # runs for the app's lifetime, so it would hold a slot forever and could
    # queue behind (or starve) the short tasks those limits are for.
    runner.admit(job)
    if not wants_status:
        return Service._create(task, None, state)

    try:
        with anyio.CancelScope() as waiter:
            state.waiter = waiter
            await task.wait_done()
    except BaseException:
        # The caller was cancelled while waiting: it never gets a handle, so a
        # service that is not ready yet would be an orphan. Stop it.
        if not state.ready:
            task.cancel("start_service() was cancelled before the service was ready")
        raise
    finally:
        state.waiter = None
    if state.ready:
        return Service._create(task, state.value, state)
    if task.state is TaskState.FAILED:
        error = task.error
        raise ServiceFailedToStart(
            f"service {task.name!r} ({task.task_id}) failed before it called "
            f"task_status.started(): {type(error).__name__}: {error}. It is not "
            "restarted: fix the error, or call task_status.started() only once "
            "the service is ready"
        ) from error
    raise ServiceFailedToStart(
        f"service {task.name!r} ({task.task_id}) was {task.state.value} "
        f"({task.cancel_reason}) before it called task_status.started()"
    )


def _check_function(func: Any) -> None:
    if inspect.iscoroutine(func) or inspect.isawaitable(func):
        reject_awaitable(
            func,
            "start_service",
            arguments="arg",
            why=": a service is called again at every restart",
        )
    if not callable(func):
        raise TypeError(
            "start_service() needs an `async def` function as its first argument, "
            f"got {func!r} of type {type(func).__name__}"
        )
    try:
        is_async = is_async_callable(func)
    except TypeError as exc:  # generator functions
        raise TypeError(str(exc).replace("a background task", "a service")) from None
    if not is_async:
        raise TypeError(
            f"services must be `async def`: {callable_name(func)} is a plain "
            "function. A service runs for the app's lifetime and a worker thread "
            "cannot be cancelled at shutdown; make it `async def` and run blocking "
            "calls with `await anyio.to_thread.run_sync(...)`"
        )


def _check_arguments(func: Any, args: tuple[Any, ...]) -> bool:
    """Bind ``args`` (and ``task_status``) to ``func`` now; True if it takes one."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # no signature to check against
        return False
    param = signature.parameters.get("task_status")
    wants_status = param is not None and param.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )
    extra = {"task_status": None} if wants_status else {}
    try:
        signature.bind(*args, **extra)
    except TypeError as exc:
        raise TypeError(
            f"cannot start service {callable_name(func)}: {exc}. {_KEYWORDS_HINT}"
        ) from None
    return wants_status


# -- running ---------------------------------------------------------------


async def run_service(state: _ServiceState) -> Any:
    """The service task's body: run ``func`` until its strategy says stop.

    Returns what the last run returned (``SUCCEEDED``) or raises what it
    raised (``FAILED``); cancellation passes through untouched.
    """
    job = state.job
    assert job is not None
    task = job.record
    restart = state.options.restart
    while True:
        kwargs: dict[str, Any] = {}
        if state.wants_status:
            kwargs["task_status"] = _TaskStatus(state)
        error: Exception | None = None
        try:
            result = await state.func(*state.args, **kwargs)
        except Exception as exc:
            if not state.startup_over:
                # start_service() is waiting: it reports this instead.
                state.startup_over = True
                raise
            if _must_stop(state) or restart == "temporary":
                raise
            error = exc
        else:
            if not state.startup_over:
                state.startup_over = True
                raise RuntimeError(
                    f"service {task.name!r} returned before it called "
                    "task_status.started(); call it once the service is ready, "
                    "or drop the task_status parameter"
                )
            if _must_stop(state) or restart != "permanent":
                return result
        if not _may_restart(state):
            if error is None:
                error = RuntimeError(
                    f"permanent service {task.name!r} returned {state.restarts + 1} "
                    f"times within {state.options.period} s; a permanent service "
                    "is restarted whenever it returns: use restart='transient' if "
                    "returning means it is done"
                )
            await _give_up(state, job, error)
            raise error
        await _restarting(state, job, error)
        if state.options.backoff:
            await anyio.sleep(state.options.backoff)
        else:
            await anyio.lowlevel.checkpoint()
        if _must_stop(state):
            # Shutdown began during the backoff: end with the last outcome.
            if error is not None:
                raise error
            return result
        job.next_run()


def _must_stop(state: _ServiceState) -> bool:
    """Cancelled (whatever the run did with it) or the supervisor is closing."""
    assert state.job is not None
    return state.job.record.cancel_reason is not None or state.runner.closing


def _may_restart(state: _ServiceState) -> bool:
    """Record a restart unless ``max_restarts`` already happened within ``period``."""
    now = anyio.current_time()
    window = state.window
    horizon = now - state.options.period
    while window and window[0] <= horizon:
        window.popleft()
    if len(window) >= state.options.max_restarts:
        return False
    window.append(now)
    state.restarts += 1
    return True


async def _restarting(state: _ServiceState, job: Job, error: Exception | None) -> None:
    await state.runner.report(
        job,
        "service:restarting",
        error,
        {
            "reason": "returned" if error is None else "crashed",
            "restarts": state.restarts,
            "restart": state.options.restart,
            "backoff_s": state.options.backoff,
        },
    )


async def _give_up(state: _ServiceState, job: Job, error: Exception) -> None:
    options = state.options
    # No traceback here: the task:failed line that follows carries it.
    await state.runner.report(
        job,
        "service:gave_up",
        error,
        {
            "restarts": state.restarts,
            "max_restarts": options.max_restarts,
            "period": options.period,
            "restart": options.restart,
            "give_up": options.give_up,
        },
    )
    if options.give_up == "shutdown" and not state.runner.closing:
        # This task ends FAILED right after, through the runner: spare it.
        state.stop_supervisor(f"service {job.record.name!r} gave up", spare=job.record)
