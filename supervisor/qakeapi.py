"""QakeAPI integration: one call wires the supervisor into a ``QakeAPI`` app.

::

    from qakeapi import QakeAPI
    from supervisor import add_background_task
    import supervisor.qakeapi

    app = QakeAPI()
    sup = supervisor.qakeapi.install(app, shutdown_timeout=10)

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
not. When they raise, the error is logged (``qakeapi:shutdown_hooks_failed``)
and the server is told that shutdown completed, as uvicorn and hypercorn
themselves treat it as non-fatal.

Events go to ``app.emit``, so ``@app.react("task:failed")`` handlers see
every failure. Each request runs with the supervisor bound, through a
qakeapi middleware, so :func:`supervisor.add_background_task` and
:class:`supervisor.BackgroundTaskManager` (drop-in replacements for
qakeapi's) find it. Sync handlers run in qakeapi's thread pool *without* the
request's context variables (qakeapi uses ``loop.run_in_executor``): there,
use the supervisor returned by :func:`install` and its
``spawn_threadsafe``.

qakeapi itself is asyncio-only (it calls ``asyncio.get_event_loop()``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from qakeapi import QakeAPI
from qakeapi.core.middleware import BaseMiddleware

from ._events import safe_log
from ._registry import bind
from ._supervisor import Supervisor
from .asgi import DEFAULT_STATE_KEY, Message, Receive, Scope, Send, run_lifespan
from .exceptions import SupervisorError

__all__ = ["get_supervisor", "install"]

_ATTR = "_nursery_supervisor"


class _BindMiddleware(BaseMiddleware):
    """Binds the supervisor to each HTTP request handled by the app."""

    def __init__(self, sup: Supervisor) -> None:
        self._sup = sup

    async def process(
        self, request: Any, call_next: Callable[[Any], Awaitable[Any]]
    ) -> Any:
        with bind(self._sup):
            return await call_next(request)


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
    starts it); without one a :class:`~supervisor.Supervisor` is created from
    ``supervisor_options``. With ``events`` (the default) task events go to
    ``app.emit`` unless the supervisor already has an ``on_event`` handler.
    Call it once per app, before the server starts; the supervisor serves
    one lifespan (one server run).
    """
    if not isinstance(app, QakeAPI):
        raise TypeError(f"install() needs a qakeapi.QakeAPI app, got {app!r}")
    if getattr(app, _ATTR, None) is not None:
        raise SupervisorError(
            f"a supervisor is already installed on {app!r} "
            f"({getattr(app, _ATTR)!r}); call install() once per app"
        )
    if supervisor is not None and supervisor_options:
        raise TypeError(
            "install() got a supervisor and supervisor options "
            f"{sorted(supervisor_options)!r}; pass either a Supervisor or the options "
            "to create one, not both"
        )
    if supervisor is None:
        if events:
            supervisor_options.setdefault("on_event", app.emit)
        sup = Supervisor(**supervisor_options)
    else:
        sup = supervisor
        if events and sup.on_event is None:
            sup.on_event = app.emit

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
            safe_log(
                sup.logger,
                "error",
                "qakeapi:shutdown_hooks_failed",
                supervisor=sup.name,
                error=str(exc),
                error_type=type(exc).__name__,
                hooks=hooks,
                detail=(
                    "qakeapi ran its on_shutdown hooks in order and stopped at the "
                    "first one that raised; the hooks after it did not run. "
                    "(qakeapi 1.3.1's own shutdown_executor hook, registered first, "
                    "raises 'cannot join current thread'.) The supervisor was shut "
                    "down anyway."
                ),
                exc_info=exc,
            )
            await send({"type": "lifespan.shutdown.complete"})

    async def handle_lifespan(scope: Scope, receive: Receive, send: Send) -> None:
        await run_lifespan(
            sup, tolerant_lifespan, scope, receive, send, state_key=state_key
        )

    async def handle_websocket(scope: Scope, receive: Receive, send: Send) -> None:
        with bind(sup):
            await qakeapi_websocket(cast(dict[str, Any], scope), receive, send)

    # Instance attributes shadow the methods that QakeAPI.__call__ looks up
    # on self; the app object stays the one the server imports.
    app._handle_lifespan = handle_lifespan  # type: ignore[method-assign]
    app._handle_websocket = handle_websocket  # type: ignore[method-assign]
    middleware = _BindMiddleware(sup)
    app.add_middleware(middleware)
    if app.middleware_stack is not None:  # already served a request
        app.middleware_stack.add(middleware)
    setattr(app, _ATTR, sup)
    return sup


def get_supervisor(app: QakeAPI) -> Supervisor:
    """The supervisor :func:`install` put on ``app``; :class:`LookupError` if none."""
    sup = getattr(app, _ATTR, None)
    if not isinstance(sup, Supervisor):
        raise LookupError(
            f"no supervisor is installed on {app!r}: call "
            "supervisor.qakeapi.install(app) once, where the app is created"
        )
    return sup
