"""supervisor.fastapi: the lifespan and the DepSupervisor dependency, in process.

FastAPI's TestClient (Starlette's) drives the real lifespan, on asyncio and trio.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import structlog

pytest.importorskip("fastapi")

from fastapi import FastAPI

import supervisor.fastapi
from supervisor import Supervisor, TaskState, add_background_task, current_supervisor
from supervisor.fastapi import DepSupervisor

from .conftest import starlette_testclient

TestClient = starlette_testclient()


def generate(rows: int) -> int:
    return sum(range(rows))


def make_app(**options: Any) -> tuple[FastAPI, supervisor.fastapi.lifespan]:
    sup_lifespan = supervisor.fastapi.lifespan(**options)
    app = FastAPI(lifespan=sup_lifespan)
    app.add_middleware(supervisor.fastapi.BindSupervisorMiddleware)

    @app.post("/async")
    async def spawn_async(sup: DepSupervisor) -> dict[str, str]:
        task = await sup.spawn(anyio.sleep, 0)
        return {"task_id": task.task_id}

    @app.post("/sync")
    def spawn_sync(sup: DepSupervisor, rows: int = 4) -> dict[str, str]:
        # A sync path operation runs in the thread pool: spawn thread-safely.
        return {"task_id": sup.spawn_threadsafe(generate, rows)}

    @app.post("/implicit")
    async def spawn_implicit() -> dict[str, str]:
        task_id = await add_background_task(anyio.sleep, 0)
        return {"task_id": task_id, "name": current_supervisor().name}

    return app, sup_lifespan


def test_dependency_in_async_and_sync_path_operations(anyio_backend: str) -> None:
    app, sup_lifespan = make_app(name="fast", shutdown_timeout=5)
    with TestClient(app, backend=anyio_backend) as client:
        sup = sup_lifespan.supervisor
        ids = [
            client.post("/async").json()["task_id"],
            client.post("/sync", params={"rows": 5}).json()["task_id"],
            client.post("/implicit").json()["task_id"],
        ]
    assert sup.closed
    tasks = [sup.get(i) for i in ids]
    assert all(t is not None and t.state is TaskState.SUCCEEDED for t in tasks)
    assert tasks[1] is not None
    assert tasks[1].result == 10


def test_composes_with_a_user_lifespan(anyio_backend: str) -> None:
    seen: list[bool] = []

    @contextlib.asynccontextmanager
    async def user_lifespan(app: FastAPI) -> AsyncIterator[dict[str, str]]:
        seen.append(current_supervisor().running)
        yield {"greeting": "hi"}
        seen.append(current_supervisor().running)

    sup_lifespan = supervisor.fastapi.lifespan(user_lifespan, name="composed")
    app = FastAPI(lifespan=sup_lifespan)

    @app.get("/")
    async def read(sup: DepSupervisor) -> dict[str, str]:
        return {"name": sup.name}

    with TestClient(app, backend=anyio_backend) as client:
        assert client.get("/").json() == {"name": "composed"}
    assert seen == [True, True]


def test_lifespan_in_svcs_shape_and_request_ids(anyio_backend: str) -> None:
    """``async def lifespan(app, sup)``, and RequestIdMiddleware via add_middleware."""
    warmed: list[Any] = []

    async def app_lifespan(app: FastAPI, sup: Supervisor) -> AsyncIterator[None]:
        warmed.append(await sup.spawn(anyio.sleep, 0))
        yield

    sup_lifespan = supervisor.fastapi.lifespan(app_lifespan, name="svcs-shape")
    app = FastAPI(lifespan=sup_lifespan)
    app.add_middleware(supervisor.fastapi.RequestIdMiddleware)

    @app.get("/")
    async def read(sup: DepSupervisor) -> dict[str, str]:
        rid = structlog.contextvars.get_contextvars()["request_id"]
        return {"name": sup.name, "request_id": rid}

    with TestClient(app, backend=anyio_backend) as client:
        response = client.get("/", headers={"X-Request-ID": "fast-1"})
    assert response.json() == {"name": "svcs-shape", "request_id": "fast-1"}
    assert response.headers["x-request-id"] == "fast-1"
    assert warmed[0].state is TaskState.SUCCEEDED


def test_dependency_without_lifespan_says_what_to_do(anyio_backend: str) -> None:
    app = FastAPI()

    @app.get("/")
    async def read(sup: DepSupervisor) -> dict[str, str]:
        raise AssertionError("unreachable")  # pragma: no cover

    with (
        TestClient(app, backend=anyio_backend) as client,
        pytest.raises(LookupError, match=r"supervisor\.fastapi\.lifespan"),
    ):
        client.get("/")
