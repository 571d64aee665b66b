"""QakeAPI's background-task examples, running on a supervisor.

The handlers are the ones from QakeAPI's "Background Tasks" page (welcome
email after creating a user, a report generated in a thread, an order with
several arguments, a task that fails, ``wait=True`` results); the only change
is the import line: ``add_background_task`` and ``BackgroundTaskManager`` come
from ``supervisor``, and one call, ``supervisor.qakeapi.install(app)``, runs
the supervisor in the app's lifespan with ``app.emit`` as its event sink.

Run it (from this directory)::

    uvicorn qakeapi_app:app --port 8000

    curl -X POST localhost:8000/users -d '{"email": "a@example.com"}'
    curl -X POST localhost:8000/process -d '{"item": 1}'    # fails, logged
    curl -X POST localhost:8000/calculate -d '{"numbers": [1, 2, 3]}'

Logs are JSON lines on stdout, or in the file named by ``EXAMPLE_LOG_FILE``;
``python -m supervisor failures FILE`` summarises the failures.
``EXAMPLE_SHUTDOWN_TIMEOUT`` (seconds, default 5) bounds the drain at shutdown.
"""

# No `from __future__ import annotations` here: qakeapi inspects handler
# annotations at runtime and does not resolve string annotations.

import asyncio
import os
import time
from typing import Any

import structlog
from qakeapi import QakeAPI

import supervisor.qakeapi
from supervisor import BackgroundTaskManager, add_background_task
from supervisor.logs import configure_logging

_log_path = os.environ.get("EXAMPLE_LOG_FILE")
configure_logging(
    json=True,
    level="DEBUG",  # the supervisor logs successes at debug
    # Line-buffered and never closed: the server process owns it until exit.
    stream=open(_log_path, "a", buffering=1, encoding="utf-8") if _log_path else None,  # noqa: SIM115
)
log = structlog.get_logger("example")

app = QakeAPI(title="Background tasks on a supervisor")
sup = supervisor.qakeapi.install(
    app,
    name="qakeapi-example",
    shutdown_timeout=float(os.environ.get("EXAMPLE_SHUTDOWN_TIMEOUT", "5")),
)
task_manager = BackgroundTaskManager()


# X-Request-ID (or a fresh id) on every log line of the request and of the
# tasks its async handlers spawn.
app.add_middleware(supervisor.qakeapi.RequestIdMiddleware())


# -- the tasks (as in QakeAPI's docs) ----------------------------------------


async def send_email(email: str, subject: str, body: str) -> str:
    """Background task to send an email."""
    await asyncio.sleep(0.05)  # simulate sending
    log.info("example:email_sent", email=email, subject=subject)
    return email


def generate_report(data: dict[str, Any]) -> dict[str, int]:
    """A synchronous task: the supervisor runs it in a worker thread."""
    time.sleep(0.05)  # heavy computation
    rows = [int(row) for row in data.get("rows", [])]
    return {"rows": len(rows), "total": sum(rows)}


async def process_order(order_id: int, user_id: int, items: list[str]) -> int:
    """Process an order; several keyword arguments go to the task unchanged."""
    for _item in items:
        await asyncio.sleep(0.01)
    log.info("example:order_processed", order_id=order_id, user_id=user_id)
    return len(items)


async def risky_task(data: dict[str, Any]) -> None:
    """Fails. No try/except needed: the supervisor logs it and emits task:failed."""
    await asyncio.sleep(0.01)
    raise ValueError(f"cannot process {data!r}")


async def calculate_result(data: list[int]) -> dict[str, int]:
    """A result the handler waits for (``wait=True``)."""
    await asyncio.sleep(0.01)
    return {"result": sum(data)}


async def watch_forever() -> None:
    """Runs until the app shuts down; then it is cancelled with reason 'shutdown'."""
    await asyncio.Event().wait()


# -- lifecycle and events ----------------------------------------------------


@app.on_startup
async def announce() -> None:
    """qakeapi runs startup hooks twice: at lifespan startup and at the 1st request."""
    log.info("example:startup_hook", supervisor_running=sup.running)


# The supervisor emits its events through app.emit.
@app.react("task:failed")
async def on_task_failed(event: Any) -> None:
    log.warning(
        "example:task_failed_event",
        failed_task_id=event.data["task_id"],
        error=event.data["error"],
    )


# -- the handlers ------------------------------------------------------------


@app.get("/health")
async def health(request: Any) -> dict[str, Any]:
    return {"status": "ok", "supervisor": repr(sup)}


@app.post("/users")
async def create_user(request: Any) -> dict[str, Any]:
    data = await request.json()
    task_id = await add_background_task(
        send_email,
        email=data["email"],
        subject="Welcome",
        body="Thanks for joining!",
    )
    return {"message": "User created", "task_id": task_id}


@app.post("/reports")
async def create_report(request: Any) -> dict[str, Any]:
    data = await request.json()
    task_id = await add_background_task(generate_report, data)
    return {"message": "Report generation started", "task_id": task_id}


@app.post("/orders")
async def create_order(request: Any) -> dict[str, Any]:
    data = await request.json()
    task_id = await add_background_task(
        process_order,
        order_id=data["id"],
        user_id=data["user_id"],
        items=data["items"],
    )
    return {"message": "Order processing started", "task_id": task_id}


@app.post("/process")
async def process(request: Any) -> dict[str, Any]:
    data = await request.json()
    task_id = await add_background_task(risky_task, data)
    return {"message": "Processing started", "task_id": task_id}


@app.post("/calculate")
async def start_calculation(request: Any) -> dict[str, Any]:
    data = await request.json()
    task_id = await task_manager.add_task(calculate_result, data["numbers"], wait=True)
    task = task_manager.tasks[task_id]
    return {"result": task.result, "task_id": task_id}


@app.post("/watch")
async def start_watch(request: Any) -> dict[str, Any]:
    task_id = await add_background_task(watch_forever)
    return {"message": "Watching until shutdown", "task_id": task_id}


@app.get("/sync-report")
def sync_report(rows: int = 3) -> dict[str, Any]:
    """A sync handler: qakeapi runs it in its thread pool, so spawn thread-safely."""
    task_id = sup.spawn_threadsafe(generate_report, {"rows": list(range(rows))})
    return {"message": "Report generation started", "task_id": task_id}


@app.get("/tasks/{task_id}")
async def task_status(task_id: str) -> dict[str, Any]:
    return task_manager.get_task_status(task_id)
