"""A Starlette app with the task page mounted at ``/tasks``, for the browser test.

``POST /spawn/block`` starts a task (named like an HTML injection) that runs
until ``POST /release``; ``POST /spawn/fail`` starts one that fails with a
hostile message (markup, a closing script tag, terminal escapes);
``POST /spawn/service`` starts a service that crashes once, then stays up.
Each answers ``{"task_id": ...}``. The page may cancel tasks for loopback
clients. JSON log lines go to ``EXAMPLE_LOG_FILE``.
"""

from __future__ import annotations

import os
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

import supervisor.starlette
import supervisor.web
from supervisor import current_supervisor
from supervisor.logs import configure_logging

_log_path = os.environ.get("EXAMPLE_LOG_FILE")
configure_logging(
    json=True,
    stream=open(_log_path, "a", buffering=1, encoding="utf-8") if _log_path else None,  # noqa: SIM115
)

HOSTILE_NAME = "<img src=x onerror=\"window.pwned='name'\">"
HOSTILE_ERROR = (
    "</script><script>window.pwned='error'</script>\x1b[31mred\x1b[0m <b>bold</b>"
)

_release = anyio.Event()
_service_runs = 0


async def blocking_job(user_password: str) -> None:
    await _release.wait()


async def failing_job(user_password: str) -> None:
    await anyio.sleep(0.01)
    raise ValueError(HOSTILE_ERROR)


async def crashy_service(*, task_status: Any) -> None:
    global _service_runs  # noqa: PLW0603 - counts runs of the one service
    _service_runs += 1
    task_status.started()
    if _service_runs == 1:
        raise RuntimeError("the first run crashes")
    await anyio.sleep_forever()


async def spawn(request: Request) -> JSONResponse:
    global _release  # noqa: PLW0603 - a new gate after each release
    sup = current_supervisor()
    kind = request.path_params["kind"]
    if kind == "block":
        if _release.is_set():
            _release = anyio.Event()
        task = await sup.options(name=HOSTILE_NAME).spawn(blocking_job, "hunter2")
    elif kind == "fail":
        task = await sup.options(name="failing_job").spawn(failing_job, "hunter2")
    elif kind == "service":
        task = (await sup.start_service(crashy_service, name="crashy")).task
    else:
        return JSONResponse({"detail": "Not Found"}, status_code=404)
    return JSONResponse({"task_id": task.task_id})


async def release(request: Request) -> JSONResponse:
    _release.set()
    return JSONResponse({"released": True})


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def loopback_only(scope: Any) -> bool:
    """Cancelling from the page is allowed to clients on this machine only."""
    client = scope.get("client")
    return client is not None and client[0] == "127.0.0.1"


app = Starlette(
    routes=[
        Route("/health", health),
        Route("/spawn/{kind}", spawn, methods=["POST"]),
        Route("/release", release, methods=["POST"]),
        Mount(
            "/tasks",
            supervisor.web.app(
                authorize=loopback_only, poll_interval=0.2, title="Example app tasks"
            ),
        ),
    ],
    lifespan=supervisor.starlette.lifespan(
        name="web-demo",
        shutdown_timeout=float(os.environ.get("EXAMPLE_SHUTDOWN_TIMEOUT", "1")),
    ),
    middleware=[Middleware(supervisor.starlette.BindSupervisorMiddleware)],
)
