"""Starlette integration: a lifespan that runs the supervisor, and an accessor.

::

    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    import supervisor.starlette

    async def app_lifespan(app, sup):
        await sup.spawn(warm_cache)  # the supervisor already runs
        yield {"db": db}             # merged into the lifespan state

    app = Starlette(
        routes=routes,
        lifespan=supervisor.starlette.lifespan(app_lifespan, shutdown_timeout=10),
        middleware=[
            Middleware(supervisor.starlette.RequestIdMiddleware),
            Middleware(supervisor.starlette.BindSupervisorMiddleware),
        ],
    )

    async def handler(request):
        sup = supervisor.starlette.get_supervisor(request)
        task = await sup.spawn(send_email, "a@example.com")
        ...

The supervisor starts before your own lifespan and shuts down after it, so
your startup code can already spawn work and your shutdown code can still
spawn last tasks; shutdown then drains and cancels what is left before the
server is told that the app has shut down. Your lifespan receives
``(app, supervisor)``, as svcs' lifespans receive their registry. The
supervisor is put in the lifespan state (``request.state.supervisor``,
merged with your lifespan's own state); :func:`get_supervisor` reads it from
there, no middleware needed.

:func:`~supervisor.current_supervisor` and
:func:`~supervisor.add_background_task` find the supervisor inside handlers
(sync endpoints in the thread pool included: Starlette copies the context
into the thread) when it is the only one running in the process; add
:class:`BindSupervisorMiddleware` to bind it to every request so that this
holds with several. Inside your own lifespan the supervisor is bound too.
``RequestIdMiddleware`` (the framework-free
``supervisor.asgi.RequestIdMiddleware``) puts a ``request_id`` on the log
lines of each request and of its tasks.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from starlette.requests import HTTPConnection

from ._lifespan import DEFAULT_STATE_KEY, SupervisorSource, check_not_started
from ._registry import bind
from ._supervisor import Supervisor
from .asgi import BindSupervisorMiddleware, RequestIdMiddleware

__all__ = [
    "BindSupervisorMiddleware",
    "RequestIdMiddleware",
    "UserLifespan",
    "get_supervisor",
    "lifespan",
]

_UserState = Mapping[str, Any] | None
#: What :class:`lifespan` accepts: ``(app, supervisor)`` (or, Starlette's own
#: shape, ``app``) to an async context manager, or an async generator
#: function of the same arguments; either yields ``None`` or a state mapping.
UserLifespan = Callable[
    ..., contextlib.AbstractAsyncContextManager[_UserState] | AsyncIterator[_UserState]
]
# What the lifespan helper calls, once the user's lifespan is adapted.
_Lifespan = Callable[
    [Any, Supervisor], contextlib.AbstractAsyncContextManager[_UserState]
]


class lifespan:
    """A Starlette/FastAPI ``lifespan=`` that runs a supervisor around yours.

    ``user_lifespan`` is your own lifespan, called with ``(app, supervisor)``
    (the supervisor already running): an async generator function that
    yields once (``None`` or a state mapping), or a function returning an
    async context manager (an ``@contextlib.asynccontextmanager`` function).
    One that takes only ``app``, as Starlette itself calls a lifespan, is
    called with ``app`` alone. It can also be used as a decorator::

        @supervisor.starlette.lifespan
        async def app_lifespan(app, sup):
            await sup.spawn(warm_cache)
            yield {"db": db}

    ``supervisor`` is used as is (not started yet; it serves one lifespan);
    without one a :class:`~supervisor.Supervisor` is created from
    ``supervisor_options`` now (so bad options fail here, and
    :attr:`supervisor` is available at import time, e.g. for sync
    endpoints) and again for each later lifespan run.

    The lifespan yields your lifespan's state plus ``{state_key: supervisor}``.
    """

    def __init__(
        self,
        user_lifespan: UserLifespan | None = None,
        *,
        supervisor: Supervisor | None = None,
        state_key: str = DEFAULT_STATE_KEY,
        **supervisor_options: Any,
    ) -> None:
        self._source = SupervisorSource.from_arguments(
            "lifespan()", supervisor, supervisor_options
        )
        self.user_lifespan = user_lifespan
        self._user = None if user_lifespan is None else _adapt(user_lifespan)
        self.state_key = state_key

    @property
    def supervisor(self) -> Supervisor:
        """The supervisor of the current lifespan run (or of the next, before one)."""
        return self._source.current

    def __call__(
        self, app: Any
    ) -> contextlib.AbstractAsyncContextManager[dict[str, Any]]:
        return self._run(app)

    @contextlib.asynccontextmanager
    async def _run(self, app: Any) -> AsyncIterator[dict[str, Any]]:
        sup = self._source.for_lifespan()
        check_not_started(sup)
        # startup()/shutdown() rather than `async with sup`: a failing user
        # shutdown must not turn the drain into an immediate cancel. Both in
        # Starlette's lifespan task, around the user's lifespan.
        await sup.startup()
        try:
            with bind(sup):
                if self._user is None:
                    yield {self.state_key: sup}
                else:
                    async with self._user(app, sup) as user_state:
                        yield {**(user_state or {}), self.state_key: sup}
        finally:
            await sup.shutdown()

    def __repr__(self) -> str:
        return (
            f"<supervisor.starlette.lifespan {self.supervisor!r} "
            f"user_lifespan={self.user_lifespan!r}>"
        )


def _adapt(user_lifespan: Callable[..., Any]) -> _Lifespan:
    """The user's lifespan as ``(app, supervisor) -> async context manager``.

    Decided once, here, so that a lifespan of the wrong shape fails at
    ``lifespan(...)``, not at the server's startup.
    """
    if not callable(user_lifespan):
        raise TypeError(
            "user_lifespan must be an async generator function (app, supervisor) "
            "or a function returning an async context manager (e.g. an "
            f"@contextlib.asynccontextmanager function), got {user_lifespan!r}"
        )
    factory: Callable[..., Any] = user_lifespan
    if inspect.isasyncgenfunction(user_lifespan):
        factory = contextlib.asynccontextmanager(user_lifespan)
    elif inspect.iscoroutinefunction(user_lifespan):
        raise TypeError(
            f"user_lifespan {user_lifespan!r} is an async function that returns; "
            "make it an async generator that yields once (startup code, `yield`, "
            "shutdown code), or decorate it with @contextlib.asynccontextmanager"
        )
    if _takes_positional(user_lifespan, 2):
        return factory
    if _takes_positional(user_lifespan, 1):
        # Starlette's own shape, `app -> async context manager`: kept working.
        return lambda app, sup: factory(app)
    raise TypeError(
        f"user_lifespan {user_lifespan!r} must take (app, supervisor) (or just app), "
        f"but its signature is {inspect.signature(user_lifespan)}"
    )


def _takes_positional(func: Callable[..., Any], count: int) -> bool:
    try:
        inspect.signature(func).bind(*([None] * count))
    except TypeError:
        return False
    except ValueError:  # no signature to read (some builtins): assume the new shape
        return count == 2
    return True


def get_supervisor(
    conn: HTTPConnection, *, state_key: str = DEFAULT_STATE_KEY
) -> Supervisor:
    """The supervisor of the app serving this request or websocket.

    Raises :class:`LookupError` when the lifespan state holds none.
    """
    sup = conn.scope.get("state", {}).get(state_key)
    if not isinstance(sup, Supervisor):
        raise LookupError(
            f"no supervisor in the request state under {state_key!r}: create the app "
            "with `lifespan=supervisor.starlette.lifespan(...)` (FastAPI: "
            "`supervisor.fastapi.lifespan(...)`) or wrap it in "
            "supervisor.asgi.SupervisorMiddleware, and run it under a server with "
            "lifespan support (uvicorn/hypercorn, or TestClient used as a context "
            "manager)"
        )
    return sup
