"""Starlette integration: a lifespan that runs the supervisor, and an accessor.

::

    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    import supervisor.starlette

    sup_lifespan = supervisor.starlette.lifespan(my_lifespan, shutdown_timeout=10)
    app = Starlette(
        routes=routes,
        lifespan=sup_lifespan,
        middleware=[Middleware(supervisor.starlette.BindSupervisorMiddleware)],
    )

    async def handler(request):
        sup = supervisor.starlette.get_supervisor(request)
        task = await sup.spawn(send_email, "a@example.com")
        ...

The supervisor starts before your own lifespan and shuts down after it, so
your startup code can already spawn work and your shutdown code can still
spawn last tasks; shutdown then drains and cancels what is left before the
server is told that the app has shut down. The supervisor is put in the
lifespan state (``request.state.supervisor``, merged with your lifespan's own
state); :func:`get_supervisor` reads it from there, no middleware needed.

:func:`~supervisor.current_supervisor` and
:func:`~supervisor.add_background_task` find the supervisor inside handlers
(sync endpoints in the thread pool included: Starlette copies the context
into the thread) when it is the only one running in the process; add
:class:`BindSupervisorMiddleware` to bind it to every request so that this
holds with several. Inside your own lifespan the supervisor is bound too.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from starlette.requests import HTTPConnection

from ._registry import bind
from ._supervisor import Supervisor
from .asgi import DEFAULT_STATE_KEY, BindSupervisorMiddleware, check_not_started

__all__ = ["BindSupervisorMiddleware", "get_supervisor", "lifespan"]

#: What a Starlette ``lifespan=`` accepts: ``app -> async context manager``
#: yielding ``None`` or a state mapping.
UserLifespan = Callable[
    [Any], contextlib.AbstractAsyncContextManager[Mapping[str, Any] | None]
]


class lifespan:
    """A Starlette/FastAPI ``lifespan=`` that runs a supervisor around yours.

    ``user_lifespan`` is your own lifespan (``app -> async context
    manager``), or None. ``supervisor`` is used as is (not started yet);
    without one a :class:`~supervisor.Supervisor` is created from
    ``supervisor_options`` now (so :attr:`supervisor` is available at import
    time, e.g. for sync endpoints) and again for each later lifespan run.

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
        if supervisor is not None and supervisor_options:
            raise TypeError(
                "lifespan() got a supervisor and supervisor options "
                f"{sorted(supervisor_options)!r}; pass either a Supervisor or the "
                "options to create one, not both"
            )
        if user_lifespan is not None and not callable(user_lifespan):
            raise TypeError(
                "user_lifespan must be a callable app -> async context manager (e.g. "
                f"an @contextlib.asynccontextmanager function), got {user_lifespan!r}"
            )
        self.user_lifespan = user_lifespan
        self.state_key = state_key
        self._options = supervisor_options
        self._owned = supervisor is None
        self.supervisor: Supervisor = (
            Supervisor(**supervisor_options) if supervisor is None else supervisor
        )

    def __call__(
        self, app: Any
    ) -> contextlib.AbstractAsyncContextManager[dict[str, Any]]:
        return self._run(app)

    @contextlib.asynccontextmanager
    async def _run(self, app: Any) -> AsyncIterator[dict[str, Any]]:
        if self._owned and self.supervisor.closed:
            self.supervisor = Supervisor(**self._options)
        sup = self.supervisor
        check_not_started(sup)
        # startup()/shutdown() rather than `async with sup`: a failing user
        # shutdown must not turn the drain into an immediate cancel.
        await sup.startup()
        try:
            with bind(sup):
                if self.user_lifespan is None:
                    yield {self.state_key: sup}
                else:
                    async with self.user_lifespan(app) as user_state:
                        yield {**(user_state or {}), self.state_key: sup}
        finally:
            await sup.shutdown()

    def __repr__(self) -> str:
        return (
            f"<supervisor.starlette.lifespan {self.supervisor!r} "
            f"user_lifespan={self.user_lifespan!r}>"
        )


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
