"""A Starlette app whose background tasks run on a supervisor.

``lifespan=supervisor.starlette.lifespan(...)`` starts the supervisor before
the app's own lifespan (which receives ``(app, supervisor)``) and shuts it
down after it (draining, then cancelling); handlers get it with
``get_supervisor(request)``, and ``BindSupervisorMiddleware`` makes
``current_supervisor()`` and ``add_background_task`` find it too, sync
endpoints in the thread pool included. ``RequestIdMiddleware`` puts the
request's ``X-Request-ID`` on the log lines of its tasks.

Run it (from this directory)::

    uvicorn starlette_app:app --port 8000

    curl -X POST localhost:8000/users -d '{"email": "a@example.com"}'
    curl -X POST localhost:8000/fail
    curl -X POST 'localhost:8000/sync-report?rows=3'

Logs are JSON lines on stdout, or in the file named by ``EXAMPLE_LOG_FILE``;
``EXAMPLE_SHUTDOWN_TIMEOUT`` (seconds, default 5) bounds the drain.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import structlog
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import supervisor.starlette
from supervisor import (
    BackgroundTaskManager,
    Supervisor,
    add_background_task,
    current_supervisor,
)
from supervisor.logs import configure_logging

_log_path = os.environ.get("EXAMPLE_LOG_FILE")
configure_logging(
    json=True,
    level="DEBUG",  # the supervisor logs successes at debug
    # Line-buffered and never closed: the server process owns it until exit.
    stream=open(_log_path, "a", buffering=1, encoding="utf-8") if _log_path else None,  # noqa: SIM115
)
log = structlog.get_logger("example")


# -- the tasks -----------------------------------------------------------------


async def send_email(email: str, subject: str) -> str:
    await anyio.sleep(0.05)  # simulate sending
    log.info("example:email_sent", email=email, subject=subject)
    return email


async def risky_task(item: int) -> None:
    await anyio.sleep(0.01)
    raise ValueError(f"cannot process item {item}")


def generate_report(rows: int) -> int:
    """Sync: runs in one of the supervisor's worker threads."""
    time.sleep(0.05)
    return sum(range(rows))


async def watch_forever() -> None:
    """Runs until shutdown, then is cancelled with reason 'shutdown'."""
    await anyio.sleep_forever()


# -- the handlers ----------------------------------------------------------------


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def create_user(request: Request) -> JSONResponse:
    data = await request.json()
    sup = supervisor.starlette.get_supervisor(request)
    task = await sup.spawn(send_email, data["email"], subject="Welcome")
    return JSONResponse({"message": "User created", "task_id": task.task_id})


async def fail(request: Request) -> JSONResponse:
    # Seed style: the supervisor bound to this request is found implicitly.
    task_id = await add_background_task(risky_task, 42)
    return JSONResponse({"message": "Processing started", "task_id": task_id})


def sync_report(request: Request) -> JSONResponse:
    """A sync endpoint: Starlette runs it in its thread pool, context included."""
    rows = int(request.query_params.get("rows", "3"))
    task_id = current_supervisor().spawn_threadsafe(generate_report, rows)
    return JSONResponse({"message": "Report generation started", "task_id": task_id})


async def watch(request: Request) -> JSONResponse:
    sup = supervisor.starlette.get_supervisor(request)
    task = await sup.options(name="watcher").spawn(watch_forever)
    return JSONResponse({"message": "Watching until shutdown", "task_id": task.task_id})


async def task_status(request: Request) -> JSONResponse:
    manager = BackgroundTaskManager(supervisor.starlette.get_supervisor(request))
    return JSONResponse(manager.get_task_status(request.path_params["task_id"]))


# -- middleware and lifespan -------------------------------------------------------


async def app_lifespan(
    app: Starlette, sup: Supervisor
) -> AsyncIterator[dict[str, Any]]:
    """The app's own lifespan: the supervisor is already running inside it."""
    log.info("example:lifespan_startup", supervisor=sup.name)
    yield {"greeting": "hello"}
    log.info("example:lifespan_shutdown")


app = Starlette(
    routes=[
        Route("/health", health),
        Route("/users", create_user, methods=["POST"]),
        Route("/fail", fail, methods=["POST"]),
        Route("/sync-report", sync_report, methods=["POST"]),
        Route("/watch", watch, methods=["POST"]),
        Route("/tasks/{task_id}", task_status),
    ],
    middleware=[
        # X-Request-ID (or a fresh id) on every log line of the request and of
        # the tasks it spawns: tasks copy their spawner's context.
        Middleware(supervisor.starlette.RequestIdMiddleware),
        Middleware(supervisor.starlette.BindSupervisorMiddleware),
    ],
    lifespan=supervisor.starlette.lifespan(
        app_lifespan,
        name="starlette-example",
        shutdown_timeout=float(os.environ.get("EXAMPLE_SHUTDOWN_TIMEOUT", "5")),
    ),
)
