"""Run a :class:`~supervisor.Supervisor` in any ASGI app's lifespan.

Wrap the app once::

    from supervisor.asgi import SupervisorMiddleware

    app = SupervisorMiddleware(app, name="app", shutdown_timeout=10)

and the supervisor lives exactly as long as the server's lifespan:

* it starts in the lifespan task **before** the inner app's own startup (so
  the app's startup code can already spawn work) and shuts down **after** the
  inner app has handled ``lifespan.shutdown`` (so the app's shutdown code can
  still spawn last tasks), draining and then cancelling what is left before
  the server hears ``lifespan.shutdown.complete``;
* inner apps that do not speak the lifespan protocol (they raise on a
  ``lifespan`` scope, or return without answering) still get a supervisor:
  the middleware answers the server itself;
* every ``http`` and ``websocket`` call runs with the supervisor bound
  (:func:`supervisor.bind`), so :func:`~supervisor.current_supervisor` and
  :func:`~supervisor.add_background_task` find it inside handlers, and the
  supervisor is in the lifespan state (``scope["state"]["supervisor"]``,
  which Starlette shows as ``request.state.supervisor``).

Why the care about *where* startup and shutdown run: the supervisor's nursery
is opened by :meth:`~supervisor.Supervisor.startup` in the calling task and
must be closed by :meth:`~supervisor.Supervisor.shutdown` in that same task,
at the same cancel-scope nesting. So both are awaited at the middleware's own
level, in the lifespan task, while the inner app's lifespan runs in a child
task that has ended before shutdown begins.

``RequestIdMiddleware`` binds a ``request_id`` for the log lines of each
request and of the tasks it spawns. A supervisor belongs to one process: with
several server workers, each has its own, and a task id is known only to the
worker that spawned it.

This module imports no web framework; it works with uvicorn, hypercorn
(asyncio and trio workers) and any server that speaks ASGI 3.
"""

from __future__ import annotations

from typing import Any

from ._lifespan import (
    DEFAULT_STATE_KEY,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    SupervisorSource,
    check_not_started,
    run_lifespan,
)
from ._registry import bind
from ._request_id import RequestIdMiddleware
from ._supervisor import Supervisor

__all__ = [
    "DEFAULT_STATE_KEY",
    "ASGIApp",
    "BindSupervisorMiddleware",
    "Message",
    "Receive",
    "RequestIdMiddleware",
    "Scope",
    "Send",
    "SupervisorMiddleware",
    "check_not_started",
    "run_lifespan",
]


class SupervisorMiddleware:
    """ASGI middleware that gives the wrapped app a supervisor for its lifespan.

    ``supervisor`` is used as is (it must not be started yet, and serves one
    lifespan); without one, a new :class:`~supervisor.Supervisor` is created
    from ``supervisor_options`` (``name``, ``shutdown_timeout``, ...) at once,
    so that bad options fail here and :attr:`supervisor` is available before
    the server starts (sync endpoints and module-level code can hold it), and
    again for each later lifespan, since a supervisor serves one lifespan
    only. Passing both is a :class:`TypeError`.

    See the module docstring for the ordering guarantees.
    """

    def __init__(
        self,
        app: ASGIApp,
        supervisor: Supervisor | None = None,
        *,
        state_key: str = DEFAULT_STATE_KEY,
        **supervisor_options: Any,
    ) -> None:
        if not callable(app):
            raise TypeError(f"SupervisorMiddleware wraps an ASGI app, got {app!r}")
        self._source = SupervisorSource.from_arguments(
            "SupervisorMiddleware()", supervisor, supervisor_options
        )
        self.app = app
        self.state_key = state_key

    @property
    def supervisor(self) -> Supervisor:
        """The supervisor of the current lifespan (or of the next, before one)."""
        return self._source.current

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await run_lifespan(
                self._source.for_lifespan(),
                self.app,
                scope,
                receive,
                send,
                state_key=self.state_key,
            )
            return
        if kind in ("http", "websocket"):
            sup = self.supervisor
            state = scope.get("state")
            if state is None:
                # A server without lifespan state: still let handlers find it.
                scope["state"] = {self.state_key: sup}
            else:
                state.setdefault(self.state_key, sup)
            with bind(sup):
                await self.app(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def __repr__(self) -> str:
        name = "supervisor.asgi.SupervisorMiddleware"
        return f"<{name} {self.supervisor!r} app={self.app!r}>"


class BindSupervisorMiddleware:
    """Bind the supervisor found in the lifespan state to every request.

    For apps whose lifespan already runs the supervisor (e.g.
    ``Starlette(lifespan=supervisor.starlette.lifespan(...))``): this makes
    :func:`~supervisor.current_supervisor` and
    :func:`~supervisor.add_background_task` find that supervisor inside
    handlers even when several supervisors run in one process. With a single
    supervisor per process they find it without this middleware. Requests
    whose state holds no supervisor pass through unbound.
    """

    def __init__(self, app: ASGIApp, *, state_key: str = DEFAULT_STATE_KEY) -> None:
        self.app = app
        self.state_key = state_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            sup = (scope.get("state") or {}).get(self.state_key)
            if isinstance(sup, Supervisor):
                with bind(sup):
                    await self.app(scope, receive, send)
                return
        await self.app(scope, receive, send)
