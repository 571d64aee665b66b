"""QakeAPI integration: one call wires the supervisor into a ``QakeAPI`` app.

::

    from qakeapi import QakeAPI
    from supervisor import add_background_task
    import supervisor.qakeapi

    app = QakeAPI()
    sup = supervisor.qakeapi.install(app, shutdown_timeout=10)
    app.add_middleware(supervisor.qakeapi.RequestIdMiddleware())  # optional

    @app.post("/users")
    async def create_user(request):
        task_id = await add_background_task(send_email, email="a@example.com")
        return {"task_id": task_id}

    @app.react("task:failed")
    async def on_task_failed(event):
        ...  # event.data: task_id, name, error, error_type, ...

What :func:`install` does, and why it does not use ``on_startup`` /
``on_shutdown`` hooks: qakeapi 1.3.1 runs its startup hooks twice (once at
``lifespan.startup``, and again inside the first request's task, since the
lifespan path never sets ``app._started``), and its own built-in shutdown
hook (``shutdown_executor``, registered first, run through its thread pool
by ``run_hybrid``) raises ``RuntimeError("cannot join current thread")``, so
that every hook registered after it with ``on_shutdown`` never runs. A
supervisor started from hooks would open a second nursery inside a request
task and would never be shut down. So :func:`install` wraps the app's ASGI
lifespan handling instead (:func:`supervisor.asgi.run_lifespan`): exactly
one nursery, opened in the lifespan task before qakeapi's startup hooks run,
and closed in that task after qakeapi's shutdown hooks, whether they raise or
not. That known failure is logged once per shutdown, at warning, in one line
(``qakeapi:shutdown_hooks_failed``) and the server is told that shutdown
completed, as uvicorn and hypercorn themselves treat it as non-fatal; any
other exception from the hooks is logged at error with its traceback.

Everything that touches qakeapi's internals is in one function,
:func:`_patch_qakeapi_1_3_1`, named after the version it was written and
tested against. On another qakeapi version :func:`install` logs
``qakeapi:version_untested`` at warning and still patches when the
internals it needs are there; when they are not, it raises
:class:`~supervisor.SupervisorError` naming them, before changing anything.

Events go to ``app.emit``, so ``@app.react("task:failed")`` handlers see
every failure. Each request runs with the supervisor bound, through a
qakeapi middleware, so :func:`supervisor.add_background_task` and
:class:`supervisor.BackgroundTaskManager` (drop-in replacements for
qakeapi's) find it. Sync handlers run in qakeapi's thread pool *without* the
request's context variables (qakeapi uses ``loop.run_in_executor``): there,
use the supervisor returned by :func:`install` and its
``spawn_threadsafe``.

A supervisor belongs to one process: with several server workers, each has
its own, and ``/tasks/{id}`` lookups only find the tasks of the worker that
answers. qakeapi itself is asyncio-only (it calls
``asyncio.get_event_loop()``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

import qakeapi
from qakeapi import QakeAPI
from qakeapi.core.middleware import BaseMiddleware

from ._events import safe_log
from ._lifespan import (
    DEFAULT_STATE_KEY,
    Message,
    Receive,
    Scope,
    Send,
    SupervisorSource,
    run_lifespan,
)
from ._registry import bind
from ._request_id import RequestIds
from ._supervisor import Supervisor
from .exceptions import SupervisorError

__all__ = ["RequestIdMiddleware", "get_supervisor", "install"]

_ATTR = "_nursery_supervisor"
#: The qakeapi release whose internals :func:`_patch_qakeapi_1_3_1` patches.
TESTED_VERSION = "1.3.1"
# The app attributes the patch reads or replaces, all private to qakeapi.
_INTERNALS = (
    "_handle_lifespan",
    "_handle_websocket",
    "_shutdown_handlers",
    "add_middleware",
    "middleware_stack",
)
# What qakeapi 1.3.1's shutdown_executor hook raises, every time (it joins
# its own thread pool from inside that pool).
_KNOWN_HOOK_ERROR = "cannot join current thread"


class _BindMiddleware(BaseMiddleware):
    """Binds the supervisor of the current lifespan to each HTTP request."""

    def __init__(self, source: SupervisorSource) -> None:
        self._source = source

    async def process(
        self, request: Any, call_next: Callable[[Any], Awaitable[Any]]
    ) -> Any:
        with bind(self._source.current):
            return await call_next(request)


class RequestIdMiddleware(BaseMiddleware):
    """A qakeapi middleware that binds a request id to the log lines of a request.

    The qakeapi form of ``supervisor.asgi.RequestIdMiddleware``, with the
    same options and rules (the ``X-Request-ID`` header when well formed,
    else a fresh id; sent back in the response): add it with
    ``app.add_middleware(supervisor.qakeapi.RequestIdMiddleware())``. Tasks
    spawned by async handlers carry the id on their log lines; sync handlers
    run without the request's context (see the module docstring), so tasks
    they spawn do not.
    """

    def __init__(
        self,
        *,
        header: str = "X-Request-ID",
        key: str = "request_id",
        max_length: int = 128,
        response_header: bool = True,
    ) -> None:
        if not isinstance(response_header, bool):
            raise TypeError(f"response_header must be a bool, got {response_header!r}")
        self.ids = RequestIds.checked(header, key, max_length)
        self.response_header = response_header

    async def process(
        self, request: Any, call_next: Callable[[Any], Awaitable[Any]]
    ) -> Any:
        request_id = self.ids.for_headers(request.scope.get("headers") or ())
        with self.ids.bound(request_id):
            response = await call_next(request)
        headers = getattr(response, "headers", None)
        if (
            self.response_header
            and isinstance(headers, dict)
            and not any(k.lower() == self.ids.header.lower() for k in headers)
        ):
            headers[self.ids.header] = request_id
        return response


def install(
    app: QakeAPI,
    supervisor: Supervisor | None = None,
    *,
    events: bool = True,
    state_key: str = DEFAULT_STATE_KEY,
    **supervisor_options: Any,
) -> Supervisor:
    """Run a supervisor in ``app``'s lifespan, bound to its requests; return it.

    ``supervisor`` is used as is (it must not be started: the app's lifespan
    starts it; it serves one lifespan); without one a
    :class:`~supervisor.Supervisor` is created from ``supervisor_options``
    now (bad options fail here) and again for each later lifespan; the one
    returned is the first, and :func:`get_supervisor` always gives the
    current one. With ``events`` (the default) task events go to
    ``app.emit`` unless the supervisor already has an ``on_event`` handler.
    Call it once per app, before the server starts.
    """
    if not isinstance(app, QakeAPI):
        raise TypeError(f"install() needs a qakeapi.QakeAPI app, got {app!r}")
    if getattr(app, _ATTR, None) is not None:
        raise SupervisorError(
            f"a supervisor is already installed on {app!r} "
            f"({get_supervisor(app)!r}); call install() once per app"
        )
    if supervisor is None and events:
        supervisor_options.setdefault("on_event", app.emit)
    source = SupervisorSource.from_arguments(
        "install()", supervisor, supervisor_options
    )
    _patch_qakeapi_1_3_1(app, source, state_key)
    if (
        supervisor is not None
        and events
        and supervisor.on_event is None
        and not (supervisor.running or supervisor.closed)  # settable until startup
    ):
        supervisor.on_event = app.emit
    setattr(app, _ATTR, source)
    return source.current


def get_supervisor(app: QakeAPI) -> Supervisor:
    """The supervisor :func:`install` runs on ``app`` now.

    Raises :class:`LookupError` if :func:`install` was not called on ``app``.
    """
    source = getattr(app, _ATTR, None)
    if not isinstance(source, SupervisorSource):
        raise LookupError(
            f"no supervisor is installed on {app!r}: call "
            "supervisor.qakeapi.install(app) once, where the app is created"
        )
    return source.current


def _patch_qakeapi_1_3_1(
    app: QakeAPI, source: SupervisorSource, state_key: str
) -> None:
    """Every change :func:`install` makes to qakeapi 1.3.1's internals, in one place.

    * ``app._handle_lifespan`` (which ``QakeAPI.__call__`` looks up on the
      instance) is replaced by :func:`~supervisor.asgi.run_lifespan` around
      qakeapi's own, made tolerant of its failing shutdown hooks;
    * ``app._handle_websocket`` is wrapped to bind the supervisor, since
      websockets bypass qakeapi's middleware;
    * a qakeapi middleware binds the supervisor to every HTTP request (added
      to the already built ``app.middleware_stack`` too, if the app served a
      request before).

    On another version it logs ``qakeapi:version_untested`` and goes on if
    the attributes above exist, else raises before changing anything.
    """
    version = getattr(qakeapi, "__version__", None)
    if version != TESTED_VERSION:
        missing = [name for name in _INTERNALS if not hasattr(app, name)]
        if missing:
            raise SupervisorError(
                f"supervisor.qakeapi supports qakeapi {TESTED_VERSION}, found "
                f"{version!r}, whose app lacks {missing!r}; install qakeapi=="
                f"{TESTED_VERSION}, or wrap the app in "
                "supervisor.asgi.SupervisorMiddleware instead of install()"
            )
        safe_log(
            source.current.logger,
            "warning",
            "qakeapi:version_untested",
            supervisor=source.current.name,
            qakeapi_version=version,
            tested_version=TESTED_VERSION,
            reason=(
                f"install() patches qakeapi {TESTED_VERSION}'s private lifespan, "
                "websocket and middleware handling; check that startup, shutdown "
                "and request binding still work"
            ),
        )

    qakeapi_lifespan = app._handle_lifespan
    qakeapi_websocket = app._handle_websocket

    async def tolerant_lifespan(scope: Scope, receive: Receive, send: Send) -> None:
        """qakeapi's lifespan, with a raising shutdown hook logged, not fatal."""
        shutdown_requested = False

        async def tracking_receive() -> Message:
            nonlocal shutdown_requested
            message = await receive()
            if message.get("type") == "lifespan.shutdown":
                shutdown_requested = True
            return message

        try:
            await qakeapi_lifespan(cast(dict[str, Any], scope), tracking_receive, send)
        except Exception as exc:
            if not shutdown_requested:
                raise
            hooks = [
                getattr(h, "__qualname__", repr(h)) for h in app._shutdown_handlers
            ]
            _log_shutdown_hooks_failed(source.current, exc, hooks)
            await send({"type": "lifespan.shutdown.complete"})

    async def handle_lifespan(scope: Scope, receive: Receive, send: Send) -> None:
        await run_lifespan(
            source.for_lifespan(),
            tolerant_lifespan,
            scope,
            receive,
            send,
            state_key=state_key,
        )

    async def handle_websocket(scope: Scope, receive: Receive, send: Send) -> None:
        with bind(source.current):
            await qakeapi_websocket(cast(dict[str, Any], scope), receive, send)

    # Instance attributes shadow the methods that QakeAPI.__call__ looks up
    # on self; the app object stays the one the server imports.
    app._handle_lifespan = handle_lifespan  # type: ignore[method-assign]
    app._handle_websocket = handle_websocket  # type: ignore[method-assign]
    middleware = _BindMiddleware(source)
    app.add_middleware(middleware)
    if app.middleware_stack is not None:  # already served a request
        app.middleware_stack.add(middleware)


def _log_shutdown_hooks_failed(
    sup: Supervisor, exc: Exception, hooks: list[str]
) -> None:
    """One line for qakeapi's known hook failure; the traceback for any other.

    ``hooks`` names the app's ``on_shutdown`` hooks, in qakeapi's order.
    """
    if isinstance(exc, RuntimeError) and str(exc) == _KNOWN_HOOK_ERROR:
        # shutdown_executor is registered first (in QakeAPI.__init__): every
        # hook after it was skipped.
        first = hooks.index("shutdown_executor") if "shutdown_executor" in hooks else -1
        skipped = hooks[first + 1 :]
        safe_log(
            sup.logger,
            "warning",
            "qakeapi:shutdown_hooks_failed",
            supervisor=sup.name,
            error=str(exc),
            error_type=type(exc).__name__,
            skipped_hooks=skipped,
            reason=(
                f"qakeapi {TESTED_VERSION}'s own shutdown_executor hook always "
                "raises this, and qakeapi then skips the later on_shutdown hooks; "
                "the supervisor shuts down regardless"
            ),
        )
        return
    safe_log(
        sup.logger,
        "error",
        "qakeapi:shutdown_hooks_failed",
        supervisor=sup.name,
        error=str(exc),
        error_type=type(exc).__name__,
        hooks=hooks,
        reason=(
            "a qakeapi on_shutdown hook raised, and qakeapi skipped the hooks after "
            "it; the supervisor shuts down regardless"
        ),
        exc_info=exc,
    )
