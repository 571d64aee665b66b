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
at the same cancel-scope nesting. So both are awaited here, at the
middleware's own level, never from inside the inner app's ``receive`` or
``send`` callbacks (which may run inside scopes the inner app opened).

This module imports no web framework; it works with uvicorn, hypercorn
(asyncio and trio workers) and any server that speaks ASGI 3.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio

from ._events import safe_log
from ._registry import bind
from ._supervisor import Supervisor
from .exceptions import SupervisorError

__all__ = [
    "ASGIApp",
    "BindSupervisorMiddleware",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "SupervisorMiddleware",
    "check_not_started",
    "run_lifespan",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The key under which integrations put the supervisor in the lifespan state.
DEFAULT_STATE_KEY = "supervisor"


def check_not_started(sup: Supervisor) -> None:
    """Refuse a supervisor that an integration cannot start: running or shut down.

    Integrations start the supervisor in the app's lifespan themselves; one
    that is already running was started somewhere else (its nursery lives in
    another task), and one that is shut down cannot run again.
    """
    if sup.running:
        raise SupervisorError(
            f"Supervisor {sup.name!r} is already running; the integration starts it "
            "in the app's lifespan. Pass a supervisor that has not been started "
            "(don't call startup() or `async with` on it yourself), or pass none "
            "and let the integration create one"
        )
    if sup.closed:
        raise SupervisorError(
            f"Supervisor {sup.name!r} is already shut down; a supervisor serves one "
            "lifespan. Pass a new Supervisor, or pass none and let the integration "
            "create one for each lifespan"
        )


class _InnerLifespan:
    """The inner app's view of the lifespan: startup replayed, replies held.

    The server's ``lifespan.startup`` was already received (the supervisor
    started before the inner app heard of it), so it is replayed as the
    inner app's first message. ``lifespan.startup.complete`` goes straight
    to the server; ``startup.failed`` and both shutdown replies are held
    until the supervisor has shut down, at the middleware's level.
    """

    __slots__ = (
        "_receive",
        "_send",
        "_startup",
        "shutdown_reply",
        "shutdown_requested",
        "startup_reply",
    )

    def __init__(self, startup: Message, receive: Receive, send: Send) -> None:
        self._startup: Message | None = startup
        self._receive = receive
        self._send = send
        self.startup_reply: Message | None = None
        self.shutdown_reply: Message | None = None
        self.shutdown_requested = False

    async def receive(self) -> Message:
        if self._startup is not None:
            message, self._startup = self._startup, None
            return message
        message = await self._receive()
        if message.get("type") == "lifespan.shutdown":
            self.shutdown_requested = True
        return message

    async def send(self, message: Message) -> None:
        kind = message.get("type")
        if kind == "lifespan.startup.complete":
            self.startup_reply = message
            await self._send(message)
        elif kind == "lifespan.startup.failed":
            self.startup_reply = message
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            self.shutdown_reply = message
        else:  # not ours to judge: let the server reject it
            await self._send(message)

    async def wait_for_shutdown(self) -> None:
        """Wait for the server's ``lifespan.shutdown`` (the inner app left early)."""
        if self.shutdown_requested:
            return
        message = await self._receive()
        if message.get("type") != "lifespan.shutdown":
            raise RuntimeError(
                "ASGI lifespan protocol error: expected 'lifespan.shutdown' from the "
                f"server after startup, got {message.get('type')!r}"
            )
        self.shutdown_requested = True


async def run_lifespan(
    sup: Supervisor,
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    state_key: str = DEFAULT_STATE_KEY,
) -> None:
    """Serve one ASGI ``lifespan`` scope: ``sup`` around the inner ``app``'s lifespan.

    The building block of :class:`SupervisorMiddleware` and the QakeAPI
    integration; call it from the ASGI callable that received the lifespan
    scope, in the lifespan task. Order: receive ``lifespan.startup``, start
    ``sup``, run the inner app's lifespan (with ``sup`` bound and in
    ``scope["state"][state_key]``), and once the inner app has handled
    ``lifespan.shutdown`` (or has finished or failed), shut ``sup`` down and
    only then pass the reply on to the server.

    The server sees what it would see without the supervisor, plus lifespan
    support for inner apps that lack it: an inner ``startup.failed`` or
    ``shutdown.failed`` is passed on, an exception from the inner app is
    re-raised once the supervisor is down. A supervisor that fails to start
    (already running, already shut down) is reported as
    ``lifespan.startup.failed`` with a message, then raised.
    """
    first = await receive()
    if first.get("type") != "lifespan.startup":
        raise RuntimeError(
            "ASGI lifespan protocol error: expected 'lifespan.startup' as the first "
            f"message, got {first.get('type')!r}"
        )
    try:
        check_not_started(sup)
        await sup.startup()
    except Exception as exc:
        await send(
            {
                "type": "lifespan.startup.failed",
                "message": f"supervisor {sup.name!r} could not start: {exc}",
            }
        )
        raise
    state = scope.get("state")
    if state is not None:
        state[state_key] = sup

    inner = _InnerLifespan(first, receive, send)
    inner_error: Exception | None = None
    finished = False
    try:
        try:
            with bind(sup):
                await app(scope, inner.receive, inner.send)
        except Exception as exc:
            inner_error = exc
        if inner.startup_reply is None:
            # ASGI: an app that raises (or returns) before answering startup
            # does not support lifespan; the server would carry on without it.
            # We carry on *with* the supervisor and answer for the app.
            safe_log(
                sup.logger,
                "info",
                "supervisor:asgi_lifespan_unsupported",
                supervisor=sup.name,
                detail=(
                    "the wrapped app does not support the ASGI lifespan protocol"
                    + ("" if inner_error is None else f" (it raised {inner_error!r})")
                    + "; the supervisor runs the lifespan alone"
                ),
            )
            inner_error = None
            inner.startup_reply = {"type": "lifespan.startup.complete"}
            await send(inner.startup_reply)
        left_early = inner.shutdown_reply is None and not inner.shutdown_requested
        if inner.startup_reply["type"] == "lifespan.startup.complete" and left_early:
            if inner_error is not None:
                # The app's lifespan died mid-life; requests still run and
                # still spawn, so the supervisor lives on until the server
                # shuts down, and the error is re-raised then.
                safe_log(
                    sup.logger,
                    "error",
                    "supervisor:asgi_lifespan_failed",
                    supervisor=sup.name,
                    error=str(inner_error),
                    error_type=type(inner_error).__name__,
                    exc_info=inner_error,
                )
            await inner.wait_for_shutdown()
        finished = True
    finally:
        if not finished:
            # Cancelled, or a BaseException from the inner app: the nursery
            # still closes here, where it was opened.
            await sup.shutdown()

    startup_failed = inner.startup_reply["type"] == "lifespan.startup.failed"
    try:
        await sup.shutdown()
    except anyio.get_cancelled_exc_class():
        raise
    except BaseException as exc:
        # A task's KeyboardInterrupt/SystemExit/... stops the supervisor and
        # comes out of shutdown(): tell the server, then let it propagate.
        kind = "startup" if startup_failed else "shutdown"
        await send(
            {
                "type": f"lifespan.{kind}.failed",
                "message": f"supervisor {sup.name!r} shutdown raised {exc!r}",
            }
        )
        raise
    if startup_failed:
        await send(inner.startup_reply)
    elif inner.shutdown_reply is not None:
        await send(inner.shutdown_reply)
    elif inner_error is None:
        await send({"type": "lifespan.shutdown.complete"})
    if inner_error is not None:
        raise inner_error


class SupervisorMiddleware:
    """ASGI middleware that gives the wrapped app a supervisor for its lifespan.

    ``supervisor`` is used as is (it must not be started yet); without one,
    a new :class:`~supervisor.Supervisor` is created from
    ``supervisor_options`` (``name``, ``shutdown_timeout``, ...) at once, so
    that :attr:`supervisor` is available before the server starts (sync
    endpoints and module-level code can hold it), and again for each later
    lifespan, since a supervisor serves one lifespan only.

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
        if supervisor is not None and supervisor_options:
            raise TypeError(
                "SupervisorMiddleware got a supervisor and supervisor options "
                f"{sorted(supervisor_options)!r}; pass either a Supervisor or the "
                "options to create one, not both"
            )
        if not callable(app):
            raise TypeError(f"SupervisorMiddleware wraps an ASGI app, got {app!r}")
        self.app = app
        self.state_key = state_key
        self._options = supervisor_options
        self._owned = supervisor is None
        self.supervisor: Supervisor = (
            Supervisor(**supervisor_options) if supervisor is None else supervisor
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            if self._owned and self.supervisor.closed:
                self.supervisor = Supervisor(**self._options)
            await run_lifespan(
                self.supervisor,
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
