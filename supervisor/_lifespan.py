"""Serve one ASGI lifespan with a supervisor around the inner app's own.

Two jobs, shared by every integration (the ASGI middleware, the
Starlette/FastAPI lifespan, QakeAPI's ``install``):

* :class:`SupervisorSource` answers "which supervisor for this lifespan":
  the one the user gave (it serves one lifespan), or a fresh one per
  lifespan made from the user's options, the first made at once so that bad
  options fail at the integration's construction and code outside requests
  has a supervisor to hold before the server starts.
* :func:`run_lifespan` plays the middleman of the ASGI lifespan protocol:
  the server on one side, the inner app on the other. The inner app's
  lifespan runs in a child task and talks to us over two anyio memory object
  streams, the way Starlette's ``TestClient`` drives an app, so the
  conversation reads top to bottom: start the supervisor, pass
  ``lifespan.startup`` in, pass the answer out, wait for the server's
  ``lifespan.shutdown``, pass it in, take the answer, let the child end,
  shut the supervisor down, and only then pass the answer out.

The nesting rule that shapes it: :meth:`Supervisor.startup` opens the
supervisor's nursery in the calling task and :meth:`Supervisor.shutdown`
must close it in that same task at the same cancel-scope nesting. So both
are awaited here, in the lifespan task, outside the task group that holds
the child: that group is opened after ``startup()`` returns and exited
before ``shutdown()`` is called, never left open across it (exiting it
after ``shutdown()`` would close the supervisor's scope inside it, which
anyio and trio refuse).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._events import safe_log
from ._registry import bind
from ._supervisor import Supervisor
from .exceptions import SupervisorError

__all__ = [
    "DEFAULT_STATE_KEY",
    "ASGIApp",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "SupervisorSource",
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

_STARTUP_COMPLETE = "lifespan.startup.complete"
_STARTUP_FAILED = "lifespan.startup.failed"
_SHUTDOWN_COMPLETE = "lifespan.shutdown.complete"
# The inner app's answers we hold or judge; anything else goes to the server.
_ANSWERS = frozenset(
    {_STARTUP_COMPLETE, _STARTUP_FAILED, _SHUTDOWN_COMPLETE, "lifespan.shutdown.failed"}
)


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


@attrs.define(eq=False)
class SupervisorSource:
    """The supervisor an integration runs: given (one lifespan) or made per lifespan.

    Build it with :meth:`from_arguments`. :attr:`current` is the supervisor
    of the current (or next) lifespan; :meth:`for_lifespan` replaces a shut
    down one with a fresh one when the source owns it.
    """

    current: Supervisor
    #: The options to make a fresh supervisor with; None when it was given.
    _options: dict[str, Any] | None = attrs.field(alias="options")

    @classmethod
    def from_arguments(
        cls, caller: str, supervisor: Supervisor | None, options: Mapping[str, Any]
    ) -> SupervisorSource:
        """Check "a supervisor or options, not both", and make the first one.

        Making it now validates the options at the call that passed them.
        """
        if supervisor is None:
            return cls(Supervisor(**options), options=dict(options))
        if options:
            raise TypeError(
                f"{caller} got a supervisor and supervisor options "
                f"{sorted(options)!r}; pass either a Supervisor or the options to "
                "create one, not both"
            )
        if not isinstance(supervisor, Supervisor):
            raise TypeError(
                f"{caller} takes a supervisor.Supervisor as `supervisor`, got "
                f"{supervisor!r}; pass Supervisor options as keyword arguments instead"
            )
        return cls(supervisor, options=None)

    @property
    def owned(self) -> bool:
        """Whether the source makes its supervisors (and so renews them)."""
        return self._options is not None

    def for_lifespan(self) -> Supervisor:
        """The supervisor for a lifespan starting now: renewed if owned and used.

        Not checked here: :func:`run_lifespan` and the Starlette lifespan check
        it with :func:`check_not_started`, so that the server hears why.
        """
        if self._options is not None and self.current.closed:
            self.current = Supervisor(**self._options)
        return self.current


@attrs.define(eq=False)
class _InnerLifespan:
    """The inner app's lifespan, in a child task, on the far side of two streams.

    :meth:`run` is the child: it calls the app with the far ends of the
    streams, keeps what the app raised in :attr:`error`, and closes its
    outbox when it ends, which is how :meth:`converse` learns that the app
    has returned. A ``BaseException`` that is not cancellation
    (``SystemExit``, ...) also cancels ``stop`` (the task group's scope), so
    that the conversation ends at once and :func:`run_lifespan` shuts down
    and re-raises it.
    """

    sup: Supervisor
    app: ASGIApp
    scope: Scope
    stop: anyio.CancelScope
    to_app: MemoryObjectSendStream[Message]
    app_inbox: MemoryObjectReceiveStream[Message]
    app_outbox: MemoryObjectSendStream[Message]
    from_app: MemoryObjectReceiveStream[Message]
    error: BaseException | None = None
    #: As the app sees it: between its startup.complete and its receiving
    #: lifespan.shutdown. An error then is its lifespan dying mid-life, which
    #: is logged when it happens.
    serving: bool = False

    @property
    def fatal(self) -> BaseException | None:
        """What the app raised, if it is a ``BaseException`` but no ``Exception``."""
        return None if isinstance(self.error, Exception) else self.error

    async def run(self) -> None:
        try:
            with bind(self.sup):
                await self.app(self.scope, self._app_receive, self._app_send)
        except anyio.get_cancelled_exc_class():
            raise
        except BaseException as exc:  # kept; run_lifespan re-raises it
            self.error = exc
            if self.fatal is not None:
                self.stop.cancel()
            elif self.serving:
                # Requests still run and still spawn, so the supervisor lives
                # on until the server shuts down; the error is re-raised then.
                safe_log(
                    self.sup.logger,
                    "error",
                    "supervisor:asgi_lifespan_failed",
                    supervisor=self.sup.name,
                    error=str(exc),
                    error_type=type(exc).__name__,
                    exc_info=exc,
                )
        finally:
            self.app_outbox.close()

    async def _app_receive(self) -> Message:
        message = await self.app_inbox.receive()
        if message.get("type") == "lifespan.shutdown":
            self.serving = False
        return message

    async def _app_send(self, message: Message) -> None:
        if message.get("type") == _STARTUP_COMPLETE:
            self.serving = True
        await self.app_outbox.send(message)

    async def converse(
        self, startup: Message, receive: Receive, send: Send
    ) -> Message | None:
        """Startup, life, shutdown; the answer to hold until the supervisor is down.

        That is the inner app's ``startup.failed`` or shutdown answer, a
        ``shutdown.complete`` made up for an app that returned without one,
        or None when the app raised instead of answering shutdown.
        """
        answer = await self._ask(startup, send)
        if answer is None:
            if self.fatal is not None:
                return None  # stop is cancelled: the task group ends now
            # ASGI: an app that raises (or returns) before answering startup
            # does not support lifespan, and the server would go on without
            # it. We go on *with* the supervisor, answering for the app.
            _log_unsupported(self.sup, self.error)
            self.error = None
            answer = {"type": _STARTUP_COMPLETE}
        if answer["type"] != _STARTUP_COMPLETE:
            await self._ended(send)  # startup.failed: the app raises or returns
            return answer
        await send(answer)
        shutdown = await receive()
        if shutdown.get("type") != "lifespan.shutdown":
            raise RuntimeError(
                "ASGI lifespan protocol error: expected 'lifespan.shutdown' from the "
                f"server after startup, got {shutdown.get('type')!r}"
            )
        answer = await self._ask(shutdown, send)
        await self._ended(send)
        if answer is None and self.error is None:
            answer = {"type": _SHUTDOWN_COMPLETE}
        return answer

    async def _ask(self, message: Message, send: Send) -> Message | None:
        """Pass ``message`` to the app; its answer, or None once it has ended."""
        await self.to_app.send(message)
        return await self._next_answer(send)

    async def _ended(self, send: Send) -> None:
        """Wait for the app to return, passing on whatever it still sends."""
        while await self._next_answer(send) is not None:
            pass  # a second answer to one message: dropped, the server has one

    async def _next_answer(self, send: Send) -> Message | None:
        async for message in self.from_app:
            if message.get("type") in _ANSWERS:
                return message
            await send(message)  # not ours to judge: let the server reject it
        return None


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

    The building block of :class:`~supervisor.asgi.SupervisorMiddleware` and
    the QakeAPI integration; call it from the ASGI callable that received the
    lifespan scope, in the lifespan task. Order: receive ``lifespan.startup``,
    start ``sup``, run the inner app's lifespan (with ``sup`` bound and in
    ``scope["state"][state_key]``), and once the inner app has handled
    ``lifespan.shutdown`` (or has finished or failed), shut ``sup`` down and
    only then pass the reply on to the server.

    The server sees what it would see without the supervisor, plus lifespan
    support for inner apps that lack it: an inner ``startup.failed`` or
    ``shutdown.failed`` is passed on, an exception from the inner app is
    re-raised once the supervisor is down. A supervisor that fails to start
    (already running, already shut down) is reported as
    ``lifespan.startup.failed`` with a message, then raised; a task's
    ``BaseException`` coming out of the shutdown is reported as
    ``lifespan.shutdown.failed`` (or ``startup.failed``), then raised.
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

    # startup() above and shutdown() below, at this one level; the child's
    # task group lives and dies entirely inside _converse, between them.
    try:
        inner, answer = await _converse(
            sup, app, scope, startup=first, receive=receive, send=send
        )
    except BaseException:
        # Cancelled, or the server's receive/send raised: the nursery still
        # closes here, where it was opened.
        await sup.shutdown()
        raise
    if (fatal := inner.fatal) is not None:
        await sup.shutdown()
        raise fatal
    try:
        await sup.shutdown()
    except anyio.get_cancelled_exc_class():
        raise
    except BaseException as exc:
        # A task's KeyboardInterrupt/SystemExit/... stops the supervisor and
        # comes out of shutdown(): tell the server, then let it propagate.
        startup_failed = answer is not None and answer["type"] == _STARTUP_FAILED
        kind = "startup" if startup_failed else "shutdown"
        await send(
            {
                "type": f"lifespan.{kind}.failed",
                "message": f"supervisor {sup.name!r} shutdown raised {exc!r}",
            }
        )
        raise
    if answer is not None:
        await send(answer)
    if inner.error is not None:
        raise inner.error


async def _converse(
    sup: Supervisor,
    app: ASGIApp,
    scope: Scope,
    *,
    startup: Message,
    receive: Receive,
    send: Send,
) -> tuple[_InnerLifespan, Message | None]:
    """Run the inner app's lifespan in a child task and talk it through.

    Returns once the child has ended: the task group is exited here, before
    the caller shuts the supervisor down. The child never raises (it keeps
    what the app raised), so an error on our side of the conversation (the
    server's ``receive``/``send`` raised, a protocol error) is the only one:
    it stops the child and is raised as itself once the group is exited,
    not wrapped in an exception group.
    """
    to_app, app_inbox = anyio.create_memory_object_stream[Message](math.inf)
    app_outbox, from_app = anyio.create_memory_object_stream[Message](math.inf)
    answer: Message | None = None
    error: BaseException | None = None
    with to_app, app_inbox, app_outbox, from_app:
        async with anyio.create_task_group() as tg:
            inner = _InnerLifespan(
                sup,
                app,
                scope,
                tg.cancel_scope,
                to_app,
                app_inbox,
                app_outbox,
                from_app,
            )
            tg.start_soon(inner.run)
            try:
                answer = await inner.converse(startup, receive, send)
            except anyio.get_cancelled_exc_class():
                raise
            except BaseException as exc:  # raised below, outside the group
                error = exc
                tg.cancel_scope.cancel()
    if error is not None:
        raise error
    return inner, answer


def _log_unsupported(sup: Supervisor, error: BaseException | None) -> None:
    fields: dict[str, Any] = {}
    if error is not None:
        fields = {"error": str(error), "error_type": type(error).__name__}
    safe_log(
        sup.logger,
        "info",
        "supervisor:asgi_lifespan_unsupported",
        supervisor=sup.name,
        **fields,
    )
