"""A plain ASGI app on trio, under hypercorn, with ``SupervisorMiddleware``.

No framework: the inner app does not even speak the lifespan protocol (it
ignores ``lifespan`` scopes), and ``SupervisorMiddleware`` still runs the
supervisor in the server's lifespan and binds it to every request, so
``add_background_task`` and ``current_supervisor()`` just work. The tasks use
anyio, so the same app also runs on asyncio (uvicorn, or hypercorn's asyncio
worker); ``/health`` says which event loop it is on.

Run it (from this directory)::

    hypercorn --worker-class trio --bind 127.0.0.1:8000 trio_hypercorn_app:app

    curl -X POST localhost:8000/spawn/ok
    curl -X POST localhost:8000/spawn/fail
    curl -X POST localhost:8000/spawn/sync
    curl -X POST localhost:8000/spawn/forever

Logs are JSON lines on stdout, or in the file named by ``EXAMPLE_LOG_FILE``;
``EXAMPLE_SHUTDOWN_TIMEOUT`` (seconds, default 5) bounds the drain.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import anyio
import anyio.to_thread
import structlog

from supervisor import add_background_task, current_supervisor
from supervisor.asgi import (
    Receive,
    RequestIdMiddleware,
    Scope,
    Send,
    SupervisorMiddleware,
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


async def send_email(email: str) -> str:
    await anyio.sleep(0.05)
    log.info("example:email_sent", email=email)
    return email


async def risky_task(item: int) -> None:
    await anyio.sleep(0.01)
    raise ValueError(f"cannot process item {item}")


def generate_report(rows: int) -> int:
    time.sleep(0.05)
    return sum(range(rows))


async def watch_forever() -> None:
    await anyio.sleep_forever()


# -- the app -------------------------------------------------------------------


def event_loop_name() -> str:
    """``"trio"`` or ``"asyncio"``: which loop is running this request."""
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            pass
        else:
            return "trio"
    return "asyncio"


def spawn_report_from_thread(rows: int) -> str:
    """What a sync handler does: it runs in a worker thread, off the loop."""
    return current_supervisor().spawn_threadsafe(generate_report, rows)


async def spawn(kind: str) -> str | None:
    if kind == "ok":
        return await add_background_task(send_email, "a@example.com")
    if kind == "fail":
        return await add_background_task(risky_task, 42)
    if kind == "sync":
        # anyio copies the context into the thread: the binding goes along.
        return await anyio.to_thread.run_sync(spawn_report_from_thread, 3)
    if kind == "forever":
        return await add_background_task(watch_forever)
    return None


async def respond(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def inner_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A bare ASGI app; it returns at once on ``lifespan`` (no lifespan support)."""
    if scope["type"] != "http":
        return
    path, method = scope["path"], scope["method"]
    if path == "/health":
        await respond(send, 200, {"status": "ok", "event_loop": event_loop_name()})
        return
    if method == "POST" and path.startswith("/spawn/"):
        task_id = await spawn(path.removeprefix("/spawn/"))
        if task_id is not None:
            await respond(send, 200, {"task_id": task_id})
            return
    await respond(send, 404, {"detail": "Not Found"})


app = SupervisorMiddleware(
    # X-Request-ID (or a fresh id) on every log line of the request and of
    # the tasks it spawns.
    RequestIdMiddleware(inner_app),
    name="trio-example",
    shutdown_timeout=float(os.environ.get("EXAMPLE_SHUTDOWN_TIMEOUT", "5")),
)
