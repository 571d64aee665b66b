"""FastAPI integration: the Starlette lifespan, plus a dependency.

::

    from fastapi import FastAPI
    import supervisor.fastapi
    from supervisor.fastapi import DepSupervisor

    app = FastAPI(lifespan=supervisor.fastapi.lifespan(shutdown_timeout=10))
    app.add_middleware(supervisor.fastapi.BindSupervisorMiddleware)
    app.add_middleware(supervisor.fastapi.RequestIdMiddleware)  # request_id in logs

    @app.post("/users")
    async def create_user(sup: DepSupervisor) -> dict[str, str]:
        task = await sup.spawn(send_email, "a@example.com")
        return {"task_id": task.task_id}

:func:`lifespan` is :func:`supervisor.starlette.lifespan` (FastAPI's
lifespan is Starlette's): the supervisor starts before your lifespan (which
receives ``(app, supervisor)``), shuts down after it, and is in the lifespan
state. :data:`DepSupervisor` gives it
to any path operation or dependency, sync ones included (they run in the
thread pool: use ``sup.spawn_threadsafe(...)`` there).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ._supervisor import Supervisor
from .asgi import BindSupervisorMiddleware, RequestIdMiddleware
from .starlette import get_supervisor as _get_supervisor
from .starlette import lifespan

__all__ = [
    "BindSupervisorMiddleware",
    "DepSupervisor",
    "RequestIdMiddleware",
    "get_supervisor",
    "lifespan",
]


async def get_supervisor(request: Request) -> Supervisor:
    """A FastAPI dependency: the app's supervisor, from the lifespan state.

    ``async`` only so that FastAPI calls it on the event loop instead of
    sending a plain function to the thread pool; outside dependencies use the
    synchronous :func:`supervisor.starlette.get_supervisor`. Raises
    :class:`LookupError` (a 500) when the app's lifespan does not run one.
    """
    return _get_supervisor(request)


DepSupervisor = Annotated[Supervisor, Depends(get_supervisor)]
"""``Annotated[Supervisor, Depends(get_supervisor)]``: write ``sup: DepSupervisor``."""
