"""A small ASGI app for SIGTERM-under-load tests: every request spawns one task.

``POST /spawn/quick|long|fail|sync`` spawns a task that succeeds at once,
runs for a minute (so shutdown must cancel it), raises, or runs in a worker
thread, and answers ``{"task_id": ...}``; ``503`` once the supervisor is
closed. JSON log lines go to ``EXAMPLE_LOG_FILE``; ``EXAMPLE_SHUTDOWN_TIMEOUT``
bounds the drain. Runs on asyncio (uvicorn) and trio (hypercorn's worker).
"""

from __future__ import annotations

import os
import time

import anyio
import anyio.to_thread
from _reply import respond  # apps/ is on sys.path (uvicorn --app-dir, PYTHONPATH)

from supervisor import SupervisorClosed, add_background_task, current_supervisor
from supervisor.asgi import Receive, Scope, Send, SupervisorMiddleware
from supervisor.logs import configure_logging

_log_path = os.environ.get("EXAMPLE_LOG_FILE")
configure_logging(
    json=True,
    level="DEBUG",  # successes are logged at debug
    stream=open(_log_path, "a", buffering=1, encoding="utf-8") if _log_path else None,  # noqa: SIM115
)


async def quick(i: int) -> int:
    await anyio.sleep(0.001)
    return i


async def long(i: int) -> int:
    await anyio.sleep(60)
    return i


async def fail(i: int) -> None:
    await anyio.sleep(0.005)
    raise ValueError(f"load task {i} failed on purpose")


def sync_work(i: int) -> int:
    time.sleep(0.01)
    return i


def _spawn_sync_from_thread(i: int) -> str:
    return current_supervisor().spawn_threadsafe(sync_work, i)


_count = 0


async def spawn(kind: str) -> str | None:
    global _count  # noqa: PLW0603 - a request counter for task arguments
    _count += 1
    if kind == "quick":
        return await add_background_task(quick, _count)
    if kind == "long":
        return await add_background_task(long, _count)
    if kind == "fail":
        return await add_background_task(fail, _count)
    if kind == "sync":
        return await anyio.to_thread.run_sync(_spawn_sync_from_thread, _count)
    return None


async def inner_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/health":
        await respond(send, 200, {"status": "ok"})
        return
    if scope["method"] == "POST" and path.startswith("/spawn/"):
        try:
            task_id = await spawn(path.removeprefix("/spawn/"))
        except SupervisorClosed:
            await respond(send, 503, {"detail": "shutting down"})
            return
        if task_id is not None:
            await respond(send, 200, {"task_id": task_id})
            return
    await respond(send, 404, {"detail": "Not Found"})


app = SupervisorMiddleware(
    inner_app,
    name="load",
    shutdown_timeout=float(os.environ.get("EXAMPLE_SHUTDOWN_TIMEOUT", "5")),
)
