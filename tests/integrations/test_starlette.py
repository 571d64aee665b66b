"""supervisor.starlette with Starlette's own TestClient driving the real lifespan.

Each test runs on asyncio and on trio (``TestClient(backend=...)``).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import structlog

pytest.importorskip("starlette")

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from supervisor import (
    Supervisor,
    SupervisorError,
    TaskState,
    add_background_task,
    current_supervisor,
)
from supervisor.starlette import (
    BindSupervisorMiddleware,
    get_supervisor,
    lifespan,
)

from .conftest import starlette_testclient

TestClient = starlette_testclient()
REQUEST_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("req", default="-")


async def spawn_sleep(request: Request) -> JSONResponse:
    task = await get_supervisor(request).spawn(anyio.sleep, 0)
    return JSONResponse({"task_id": task.task_id})


async def implicit(request: Request) -> JSONResponse:
    """Seed style: no supervisor in sight."""
    task_id = await add_background_task(anyio.sleep, 0)
    return JSONResponse({"task_id": task_id, "name": current_supervisor().name})


def read_var() -> str:
    return REQUEST_VAR.get()


def sync_endpoint(request: Request) -> JSONResponse:
    """Runs in Starlette's thread pool; spawns thread-safely."""
    task_id = current_supervisor().spawn_threadsafe(read_var)
    return JSONResponse({"task_id": task_id})


class SetVar:
    """Sets a context variable for the request, like a request-id middleware."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = REQUEST_VAR.set("request-42")
        try:
            await self.app(scope, receive, send)
        finally:
            REQUEST_VAR.reset(token)


async def ws_endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
    task_id = await add_background_task(anyio.sleep, 0)
    await websocket.send_json({"task_id": task_id, "name": current_supervisor().name})
    await websocket.close()


def make_app(
    sup_lifespan: lifespan | None = None, *, bind: bool = True, **options: Any
) -> Starlette:
    middleware = [Middleware(SetVar)]
    if bind:
        middleware.append(Middleware(BindSupervisorMiddleware))
    return Starlette(
        routes=[
            Route("/spawn", spawn_sleep),
            Route("/implicit", implicit),
            Route("/sync", sync_endpoint),
            WebSocketRoute("/ws", ws_endpoint),
        ],
        middleware=middleware,
        lifespan=sup_lifespan if sup_lifespan is not None else lifespan(**options),
    )


def test_lifespan_runs_the_supervisor(anyio_backend: str) -> None:
    """The supervisor runs for the lifespan; handlers reach it; shutdown accounts."""
    sup_lifespan = lifespan(name="app", shutdown_timeout=5)
    sup = sup_lifespan.supervisor
    app = make_app(sup_lifespan)
    assert not sup.running
    with TestClient(app, backend=anyio_backend) as client:
        assert sup.running
        task_id = client.get("/spawn").json()["task_id"]
        implicit_id = client.get("/implicit").json()["task_id"]
    assert sup.closed
    for tid in (task_id, implicit_id):
        task = sup.get(tid)
        assert task is not None
        assert task.state is TaskState.SUCCEEDED


def test_composes_with_the_user_lifespan(anyio_backend: str) -> None:
    """Supervisor starts before the user's lifespan and shuts down after it."""
    seen: list[Any] = []
    holder: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def user_lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        sup = current_supervisor()  # bound inside the user's lifespan
        seen.append(("startup", sup.running))
        yield {"db": "connection"}
        seen.append(("shutdown", sup.running))
        # Shutdown code may still spawn; it is drained.
        holder["last"] = await sup.spawn(anyio.sleep, 0.01)

    async def read_state(request: Request) -> JSONResponse:
        return JSONResponse(
            {"db": request.state.db, "sup": request.state.supervisor.name}
        )

    sup_lifespan = lifespan(user_lifespan, name="composed")
    app = Starlette(routes=[Route("/", read_state)], lifespan=sup_lifespan)
    with TestClient(app, backend=anyio_backend) as client:
        assert client.get("/").json() == {"db": "connection", "sup": "composed"}
    assert seen == [("startup", True), ("shutdown", True)]
    assert holder["last"].state is TaskState.SUCCEEDED
    assert sup_lifespan.supervisor.closed


def test_failing_user_startup_still_shuts_the_supervisor_down(
    anyio_backend: str,
) -> None:
    """The user's startup raises: the app does not start, the supervisor is closed."""

    @contextlib.asynccontextmanager
    async def broken(app: Starlette) -> AsyncIterator[None]:
        await current_supervisor().spawn(anyio.sleep_forever)
        raise ConnectionError("database is down")
        yield  # pragma: no cover

    sup_lifespan = lifespan(broken, name="broken", shutdown_timeout=0)
    app = Starlette(lifespan=sup_lifespan)
    with (
        pytest.raises(ConnectionError, match="database is down"),
        TestClient(app, backend=anyio_backend),
    ):
        pass  # pragma: no cover
    sup = sup_lifespan.supervisor
    assert sup.closed
    assert sup.stats().cancelled == 1


def test_sync_endpoint_spawns_threadsafe_with_the_request_context(
    anyio_backend: str,
) -> None:
    """Starlette copies the context into its thread pool: binding and vars arrive."""
    sup_lifespan = lifespan(name="sync")
    app = make_app(sup_lifespan)
    with TestClient(app, backend=anyio_backend) as client:
        task_id = client.get("/sync").json()["task_id"]
        sup = sup_lifespan.supervisor
    task = sup.get(task_id)
    assert task is not None
    assert task.state is TaskState.SUCCEEDED
    assert task.result == "request-42"


def test_bind_middleware_matters_with_two_supervisors(anyio_backend: str) -> None:
    """Two apps running: bound handlers find their own; unbound ones cannot choose."""
    bound = make_app(name="bound")
    unbound = make_app(name="unbound", bind=False)
    with (
        TestClient(bound, backend=anyio_backend) as bound_client,
        TestClient(
            unbound, backend=anyio_backend, raise_server_exceptions=True
        ) as other,
    ):
        assert bound_client.get("/implicit").json()["name"] == "bound"
        with pytest.raises(SupervisorError, match="several supervisors are running"):
            other.get("/implicit")
        # get_supervisor() reads the lifespan state: it needs no binding.
        assert other.get("/spawn").status_code == 200


def test_websocket_is_bound(anyio_backend: str) -> None:
    app = make_app(name="ws")
    with (
        TestClient(app, backend=anyio_backend) as client,
        client.websocket_connect("/ws") as ws,
    ):
        assert ws.receive_json()["name"] == "ws"


def test_get_supervisor_without_lifespan_says_what_to_do(anyio_backend: str) -> None:
    async def handler(request: Request) -> JSONResponse:
        get_supervisor(request)
        raise AssertionError("unreachable")  # pragma: no cover

    app = Starlette(routes=[Route("/", handler)])
    with (
        TestClient(app, backend=anyio_backend) as client,
        pytest.raises(LookupError, match=r"lifespan=supervisor\.starlette\.lifespan"),
    ):
        client.get("/")


def test_owned_supervisor_is_renewed_given_one_is_not(anyio_backend: str) -> None:
    """Each lifespan run gets a fresh owned supervisor; a given one runs once."""
    owned = lifespan(name="owned")
    first = owned.supervisor
    app = make_app(owned)
    for _ in range(2):
        with TestClient(app, backend=anyio_backend):
            assert owned.supervisor.running
    assert owned.supervisor is not first

    given = Supervisor(name="given")
    app = make_app(lifespan(supervisor=given))
    with TestClient(app, backend=anyio_backend):
        pass
    with (
        pytest.raises(SupervisorError, match="'given' is already shut down"),
        TestClient(app, backend=anyio_backend),
    ):
        pass  # pragma: no cover


def test_supervisor_and_options_are_exclusive() -> None:
    with pytest.raises(TypeError, match=r"lifespan\(\) got a supervisor.*not both"):
        lifespan(supervisor=Supervisor(), name="x")


def test_options_are_checked_at_construction() -> None:
    with pytest.raises(ValueError, match="max_concurrency"):
        lifespan(max_concurrency=0)


def test_user_lifespan_must_be_callable() -> None:
    with pytest.raises(TypeError, match="asynccontextmanager"):
        lifespan("not a lifespan")  # type: ignore[arg-type]


def test_user_lifespan_of_the_wrong_shape_is_refused_at_construction() -> None:
    async def returns(app: Any, sup: Supervisor) -> None:
        """An async function, not a generator: it cannot bracket the app's life."""

    async def too_many(app: Any, sup: Supervisor, extra: int) -> AsyncIterator[None]:
        yield  # pragma: no cover

    with pytest.raises(TypeError, match="async generator that yields once"):
        lifespan(returns)
    with pytest.raises(TypeError, match=r"must take \(app, supervisor\)"):
        lifespan(too_many)


async def read_supervisor_name(request: Request) -> JSONResponse:
    return JSONResponse(
        {"sup": request.state.supervisor.name, "db": getattr(request.state, "db", None)}
    )


def test_async_generator_lifespan_gets_app_and_supervisor(anyio_backend: str) -> None:
    """svcs' shape: ``async def lifespan(app, sup): ... yield state ...``."""
    seen: list[Any] = []
    last: list[Any] = []

    async def app_lifespan(
        app: Starlette, sup: Supervisor
    ) -> AsyncIterator[dict[str, str]]:
        seen.append((type(app).__name__, sup.running, current_supervisor() is sup))
        yield {"db": "connection"}
        # Shutdown code may still spawn; it is drained.
        last.append(await sup.spawn(anyio.sleep, 0.01))

    sup_lifespan = lifespan(app_lifespan, name="gen")
    app = Starlette(routes=[Route("/", read_supervisor_name)], lifespan=sup_lifespan)
    with TestClient(app, backend=anyio_backend) as client:
        assert client.get("/").json() == {"sup": "gen", "db": "connection"}
    assert seen == [("Starlette", True, True)]
    assert last[0].state is TaskState.SUCCEEDED
    assert sup_lifespan.supervisor.closed


def test_context_manager_factory_gets_app_and_supervisor(anyio_backend: str) -> None:
    seen: list[Supervisor] = []

    @contextlib.asynccontextmanager
    async def app_lifespan(app: Starlette, sup: Supervisor) -> AsyncIterator[None]:
        seen.append(sup)
        yield

    sup_lifespan = lifespan(app_lifespan, name="cm")
    app = Starlette(routes=[Route("/", read_supervisor_name)], lifespan=sup_lifespan)
    with TestClient(app, backend=anyio_backend) as client:
        assert client.get("/").json() == {"sup": "cm", "db": None}
    assert seen == [sup_lifespan.supervisor]


def test_lifespan_as_a_decorator(anyio_backend: str) -> None:
    """``@supervisor.starlette.lifespan`` on the app's own lifespan, as in svcs."""

    @lifespan
    async def app_lifespan(app: Starlette, sup: Supervisor) -> AsyncIterator[None]:
        await sup.spawn(anyio.sleep, 0)
        yield

    assert isinstance(app_lifespan, lifespan)
    app = Starlette(routes=[Route("/", read_supervisor_name)], lifespan=app_lifespan)
    with TestClient(app, backend=anyio_backend) as client:
        assert client.get("/").json()["sup"] == "app"
    assert app_lifespan.supervisor.stats().succeeded == 1


def test_a_fresh_supervisor_for_each_run_of_a_generator_lifespan(
    anyio_backend: str,
) -> None:
    """Each lifespan run gets its own supervisor, and the generator runs anew."""
    seen: list[Supervisor] = []

    async def app_lifespan(app: Starlette, sup: Supervisor) -> AsyncIterator[None]:
        seen.append(sup)
        yield

    sup_lifespan = lifespan(app_lifespan, name="again")
    app = Starlette(lifespan=sup_lifespan)
    for _ in range(2):
        with TestClient(app, backend=anyio_backend):
            pass
    first, second = seen
    assert first is not second
    assert first.closed
    assert second.closed


def test_request_ids_on_the_tasks_log_lines(anyio_backend: str) -> None:
    """RequestIdMiddleware in a Starlette app: the task's line names the request."""
    from supervisor.starlette import RequestIdMiddleware

    async def fails() -> None:
        raise ValueError("boom")

    async def spawn_failing(request: Request) -> JSONResponse:
        task_id = await add_background_task(fails)
        return JSONResponse({"task_id": task_id})

    sup_lifespan = lifespan(name="ids", shutdown_timeout=5)
    app = Starlette(
        routes=[Route("/", spawn_failing)],
        middleware=[Middleware(RequestIdMiddleware)],
        lifespan=sup_lifespan,
    )
    with (
        structlog.testing.capture_logs(
            processors=[structlog.contextvars.merge_contextvars]
        ) as logs,
        TestClient(app, backend=anyio_backend) as client,
    ):
        response = client.get("/", headers={"X-Request-ID": "req-9"})
        generated = client.get("/")
    assert response.headers["x-request-id"] == "req-9"
    failed = {
        x["task_id"]: x["request_id"] for x in logs if x["event"] == "task:failed"
    }
    assert failed == {
        response.json()["task_id"]: "req-9",
        generated.json()["task_id"]: generated.headers["x-request-id"],
    }
    assert len(generated.headers["x-request-id"]) == 32


def test_supervisor_middleware_around_a_starlette_app(anyio_backend: str) -> None:
    """The generic middleware works as well: it wraps Starlette's own lifespan."""
    from supervisor.asgi import SupervisorMiddleware

    seen: list[bool] = []

    @contextlib.asynccontextmanager
    async def user_lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        seen.append(current_supervisor().running)
        yield {"db": "connection"}
        seen.append(current_supervisor().running)

    async def read(request: Request) -> JSONResponse:
        sup = get_supervisor(request)  # the middleware put it in the state
        await add_background_task(anyio.sleep, 0)
        return JSONResponse({"db": request.state.db, "sup": sup.name})

    inner = Starlette(routes=[Route("/", read)], lifespan=user_lifespan)
    app = SupervisorMiddleware(inner, name="wrapped")
    with TestClient(app, backend=anyio_backend) as client:
        assert client.get("/").json() == {"db": "connection", "sup": "wrapped"}
    assert seen == [True, True]
    assert app.supervisor.closed
    assert app.supervisor.stats().succeeded == 1
