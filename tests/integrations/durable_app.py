"""The app and the worker of the durable-task tests: one module, both sides.

The app (Starlette under uvicorn) sends tasks from requests; the worker
(``python -m supervisor.durable worker durable_app:queue``) imports the same
module, so both know the same registered task names. The Redis URL, the
queue's name and its idle timeout come from the environment, so that each
test gets its own queue.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from supervisor import Retry
from supervisor.durable import DurableQueue

queue = DurableQueue(
    os.environ.get("DURABLE_REDIS_URL", "redis://127.0.0.1:6379/0"),
    name=os.environ.get("DURABLE_QUEUE", "tests"),
    idle_timeout=float(os.environ.get("DURABLE_IDLE_TIMEOUT", "30")),
)

_flaky_calls: dict[str, int] = {}


def _mark(line: str) -> None:
    """Append to the marks file: what ran, seen from outside the worker."""
    path = os.environ.get("DURABLE_MARKS")
    if path:
        with Path(path).open("a") as f:
            f.write(line + "\n")


@queue.task
async def add(a: int, b: int) -> int:
    _mark(f"add {a} {b}")
    return a + b


@queue.task(name="boom")
async def explode(why: str) -> None:
    raise ValueError(why)


@queue.task
async def flaky(key: str) -> str:
    """Fails its first attempt in this worker process, then succeeds."""
    _flaky_calls[key] = _flaky_calls.get(key, 0) + 1
    if _flaky_calls[key] == 1:
        raise ConnectionError("first try fails")
    return "ok"


@queue.task
async def nap(token: str, seconds: float) -> str:
    _mark(f"start {token}")
    await anyio.sleep(seconds)
    _mark(f"done {token}")
    return token


def on_event(name: str, data: dict[str, object]) -> None:
    """The worker's ``--on-event`` handler in the tests: events become marks."""
    _mark(f"event {name} {data['task_id']}")


async def enqueue(request: Request) -> JSONResponse:
    body = await request.json()
    structlog.contextvars.bind_contextvars(request_id=body.get("request_id"))
    ids = []
    for i in range(int(body["n"])):
        if body["kind"] == "nap":
            record = await queue.spawn(nap, f"{body['prefix']}{i}", body["seconds"])
        else:
            record = await queue.options(retry=Retry(attempts=1)).spawn(
                explode, f"bad {i}"
            )
        ids.append(record.task_id)
    return JSONResponse({"ids": ids})


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with queue:
        yield


app = Starlette(
    routes=[Route("/enqueue", enqueue, methods=["POST"]), Route("/health", health)],
    lifespan=lifespan,
)
