"""A FastAPI app whose background tasks run on a supervisor.

``lifespan=supervisor.fastapi.lifespan(...)`` runs the supervisor around the
app's lifespan; path operations receive it as a dependency
(``sup: DepSupervisor``), sync ones included (FastAPI runs them in its
thread pool, where ``spawn_threadsafe`` is the way to spawn).

Run it (from this directory)::

    uvicorn fastapi_app:app --port 8000

    curl -X POST localhost:8000/users -H 'content-type: application/json' \\
         -d '{"email": "a@example.com"}'
    curl -X POST localhost:8000/fail

Logs are JSON lines on stdout, or in the file named by ``EXAMPLE_LOG_FILE``;
``EXAMPLE_SHUTDOWN_TIMEOUT`` (seconds, default 5) bounds the drain.
"""

from __future__ import annotations

import os
import time
from typing import Any

import anyio
import structlog
from fastapi import FastAPI
from pydantic import BaseModel

import supervisor.fastapi
from supervisor import add_background_task
from supervisor.fastapi import DepSupervisor
from supervisor.logs import configure_logging

_log_path = os.environ.get("EXAMPLE_LOG_FILE")
configure_logging(
    json=True,
    level="DEBUG",  # the supervisor logs successes at debug
    # Line-buffered and never closed: the server process owns it until exit.
    stream=open(_log_path, "a", buffering=1, encoding="utf-8") if _log_path else None,  # noqa: SIM115
)
log = structlog.get_logger("example")

app = FastAPI(
    title="Background tasks on a supervisor",
    lifespan=supervisor.fastapi.lifespan(
        name="fastapi-example",
        shutdown_timeout=float(os.environ.get("EXAMPLE_SHUTDOWN_TIMEOUT", "5")),
    ),
)
app.add_middleware(supervisor.fastapi.BindSupervisorMiddleware)
# X-Request-ID (or a fresh id) on every log line of the request and of its tasks.
app.add_middleware(supervisor.fastapi.RequestIdMiddleware)


# -- the tasks -----------------------------------------------------------------


async def send_email(email: str, subject: str) -> str:
    await anyio.sleep(0.05)
    log.info("example:email_sent", email=email, subject=subject)
    return email


async def risky_task(item: int) -> None:
    await anyio.sleep(0.01)
    raise ValueError(f"cannot process item {item}")


def generate_report(rows: int) -> int:
    time.sleep(0.05)
    return sum(range(rows))


async def watch_forever() -> None:
    await anyio.sleep_forever()


# -- the path operations ---------------------------------------------------------


class User(BaseModel):
    email: str


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/users")
async def create_user(user: User, sup: DepSupervisor) -> dict[str, str]:
    task = await sup.spawn(send_email, user.email, subject="Welcome")
    return {"message": "User created", "task_id": task.task_id}


@app.post("/fail")
async def fail() -> dict[str, str]:
    task_id = await add_background_task(risky_task, 42)  # the bound supervisor
    return {"message": "Processing started", "task_id": task_id}


@app.post("/sync-report")
def sync_report(sup: DepSupervisor, rows: int = 3) -> dict[str, str]:
    """A sync path operation, run in FastAPI's thread pool."""
    task_id = sup.spawn_threadsafe(generate_report, rows)
    return {"message": "Report generation started", "task_id": task_id}


@app.post("/watch")
async def watch(sup: DepSupervisor) -> dict[str, str]:
    task = await sup.options(name="watcher").spawn(watch_forever)
    return {"message": "Watching until shutdown", "task_id": task.task_id}


@app.get("/tasks/{task_id}")
async def task_status(task_id: str, sup: DepSupervisor) -> dict[str, Any]:
    task = sup.get(task_id)
    if task is None:
        return {"status": "not_found"}
    return {"task_id": task_id, "status": task.state.value, "result": task.result}
