"""SupervisorMiddleware and run_lifespan, in process, on asyncio and trio.

A hand-played server (``drive_lifespan``) sends the lifespan messages, so
each test can look at the supervisor at the exact moment the server hears
each reply: startup before the inner app's, shutdown after it, replies held
until the supervisor is down.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import structlog

from supervisor import (
    BackgroundTask,
    Supervisor,
    SupervisorError,
    SupervisorNotStarted,
    TaskState,
    _registry,
    add_background_task,
    current_supervisor,
)
from supervisor.asgi import (
    BindSupervisorMiddleware,
    Receive,
    Scope,
    Send,
    SupervisorMiddleware,
    run_lifespan,
)

from .conftest import call_http, drive_lifespan, starlette_testclient


async def no_lifespan_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A bare app: returns at once on anything but http."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def raising_lifespan_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The other way to lack lifespan support: refuse the scope."""
    assert scope["type"] == "http", "http only"


async def test_app_without_lifespan_gets_one() -> None:
    """The middleware answers the server for an app that ignores lifespan."""
    app = SupervisorMiddleware(no_lifespan_app, name="bare", shutdown_timeout=0)
    sup = app.supervisor
    async with drive_lifespan(app) as server:
        assert await server.startup() == {"type": "lifespan.startup.complete"}
        assert sup.running
        assert server.scope["state"]["supervisor"] is sup
        task = await sup.spawn(anyio.sleep_forever)
        assert await server.shutdown() == {"type": "lifespan.shutdown.complete"}
        # The reply came only once the supervisor was down.
        assert sup.closed
        assert task.state is TaskState.CANCELLED
        assert task.cancel_reason == "shutdown"
    assert server.error is None


async def test_app_raising_on_lifespan_is_unsupported_not_fatal() -> None:
    """ASGI: an app raising on a lifespan scope lacks lifespan; we log and go on."""
    app = SupervisorMiddleware(raising_lifespan_app, name="strict")
    with structlog.testing.capture_logs() as logs:
        async with drive_lifespan(app) as server:
            assert (await server.startup())["type"] == "lifespan.startup.complete"
            assert (await server.shutdown())["type"] == "lifespan.shutdown.complete"
    assert server.error is None
    (line,) = [x for x in logs if x["event"] == "supervisor:asgi_lifespan_unsupported"]
    assert line["error_type"] == "AssertionError"
    assert line["error"].startswith("http only")
    assert app.supervisor.closed


class LifespanApp:
    """An inner app with lifespan support that records what it saw, and when."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.seen: list[tuple[str, Any]] = []
        self.last_task: BackgroundTask[Any] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await no_lifespan_app(scope, receive, send)
            return
        assert (await receive())["type"] == "lifespan.startup"
        self.seen.append(("startup: supervisor running", self.sup.running))
        self.seen.append(("startup: bound", current_supervisor() is self.sup))
        self.seen.append(
            ("startup: in state", scope["state"]["supervisor"] is self.sup)
        )
        await send({"type": "lifespan.startup.complete"})
        assert (await receive())["type"] == "lifespan.shutdown"
        self.seen.append(("shutdown: supervisor running", self.sup.running))
        # Shutdown code may still spawn a last task; it is drained.
        self.last_task = await current_supervisor().spawn(anyio.sleep, 0.01)
        await send({"type": "lifespan.shutdown.complete"})


async def test_supervisor_wraps_the_inner_lifespan() -> None:
    """Startup before the inner app's, shutdown after it, reply after the drain."""
    sup = Supervisor(name="outer", shutdown_timeout=10)
    inner = LifespanApp(sup)
    app = SupervisorMiddleware(inner, sup)
    async with drive_lifespan(app) as server:
        await server.startup()
        await server.shutdown()
        assert sup.closed
        assert inner.last_task is not None
        assert inner.last_task.state is TaskState.SUCCEEDED
    assert inner.seen == [
        ("startup: supervisor running", True),
        ("startup: bound", True),
        ("startup: in state", True),
        ("shutdown: supervisor running", True),
    ]
    assert server.error is None
    assert [m["type"] for m in server.sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


async def test_inner_startup_failed_is_passed_on_after_shutdown() -> None:
    """A failing inner startup: the supervisor is shut down, then the server told."""
    sup = Supervisor(name="s")

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "db down"})
        raise ConnectionError("db down")

    async with drive_lifespan(SupervisorMiddleware(failing, sup)) as server:
        reply = await server.startup()
        assert reply == {"type": "lifespan.startup.failed", "message": "db down"}
        assert sup.closed
    assert isinstance(server.error, ConnectionError)


async def test_inner_shutdown_failed_is_passed_on() -> None:
    """The server hears the inner app's shutdown.failed; the supervisor still drains."""
    sup = Supervisor(name="s")

    async def failing_shutdown(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.failed", "message": "flush failed"})

    async with drive_lifespan(SupervisorMiddleware(failing_shutdown, sup)) as server:
        await server.startup()
        task = await sup.spawn(anyio.sleep, 0.01)
        reply = await server.shutdown()
        assert reply == {"type": "lifespan.shutdown.failed", "message": "flush failed"}
        assert task.state is TaskState.SUCCEEDED
        assert sup.closed
    assert server.error is None


async def test_inner_error_at_shutdown_is_reraised_after_the_supervisor() -> None:
    """An inner app raising during shutdown (qakeapi's way): sup down, error raised."""
    sup = Supervisor(name="s", shutdown_timeout=0)

    async def raising_shutdown(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        raise RuntimeError("cannot join current thread")

    async with drive_lifespan(SupervisorMiddleware(raising_shutdown, sup)) as server:
        await server.startup()
        task = await sup.spawn(anyio.sleep_forever)
        await server._to_app.send({"type": "lifespan.shutdown"})
        await server.finished()
        assert sup.closed
        assert task.state is TaskState.CANCELLED
    assert isinstance(server.error, RuntimeError)
    # No reply: the server sees the exception, as it would without us.
    assert [m["type"] for m in server.sent] == ["lifespan.startup.complete"]


async def test_inner_lifespan_dying_midlife_keeps_the_supervisor_until_shutdown() -> (
    None
):
    """Requests still run after the inner lifespan died, so the supervisor stays."""
    sup = Supervisor(name="s", shutdown_timeout=0)
    died = anyio.Event()

    async def dies(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        died.set()
        raise KeyError("cache")

    with structlog.testing.capture_logs() as logs:
        async with drive_lifespan(SupervisorMiddleware(dies, sup)) as server:
            await server.startup()
            await died.wait()
            await anyio.lowlevel.checkpoint()
            assert sup.running
            task = await sup.spawn(anyio.sleep, 0)
            await task.wait()
            await server._to_app.send({"type": "lifespan.shutdown"})
            await server.finished()
            assert sup.closed
    assert isinstance(server.error, KeyError)
    assert [x["event"] for x in logs if x["event"].startswith("supervisor:asgi")] == [
        "supervisor:asgi_lifespan_failed"
    ]


async def test_inner_lifespan_returning_early_is_completed_for_it() -> None:
    """An inner app that answers startup and returns: we wait and answer shutdown."""
    sup = Supervisor(name="s")

    async def quits(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})

    async with drive_lifespan(SupervisorMiddleware(quits, sup)) as server:
        assert (await server.startup())["type"] == "lifespan.startup.complete"
        await anyio.lowlevel.checkpoint()
        assert sup.running
        assert (await server.shutdown())["type"] == "lifespan.shutdown.complete"
        assert sup.closed
    assert server.error is None


class Fatal(BaseException):
    """Stands for KeyboardInterrupt/SystemExit raised by a task."""


async def test_fatal_task_error_fails_the_shutdown_and_propagates() -> None:
    """A task's BaseException comes out of shutdown(): shutdown.failed, then raised."""
    sup = Supervisor(name="s")

    async def fatal() -> None:
        raise Fatal("stop everything")

    async with drive_lifespan(SupervisorMiddleware(no_lifespan_app, sup)) as server:
        await server.startup()
        task = await sup.spawn(fatal)
        await task.wait_done()
        reply = await server.shutdown()
        assert reply["type"] == "lifespan.shutdown.failed"
        assert "Fatal('stop everything')" in reply["message"]
    assert isinstance(server.error, Fatal)
    assert task.state is TaskState.FAILED


@pytest.mark.parametrize("state", ["running", "closed"])
async def test_supervisor_that_cannot_start_fails_startup(state: str) -> None:
    """A supervisor already started (or shut down) is startup.failed, then raised."""
    sup = Supervisor(name="used")
    if state == "running":
        await sup.startup()
    else:
        await sup.shutdown()
    try:
        async with drive_lifespan(SupervisorMiddleware(no_lifespan_app, sup)) as server:
            reply = await server.startup()
            await server.finished()
    finally:
        await sup.shutdown()
    assert reply["type"] == "lifespan.startup.failed"
    assert isinstance(server.error, SupervisorError)
    if state == "running":
        assert "'used' is already running" in reply["message"]
        assert "Pass a supervisor that has not been started" in str(server.error)
    else:
        assert "'used' is already shut down" in reply["message"]
        assert "Pass a new Supervisor" in str(server.error)


async def test_owned_supervisor_is_renewed_for_each_lifespan() -> None:
    """Supervisors are single-use: the middleware makes a fresh one per lifespan."""
    app = SupervisorMiddleware(no_lifespan_app, name="again")
    first = app.supervisor
    for _ in range(2):
        async with drive_lifespan(app) as server:
            await server.startup()
            assert app.supervisor.running
            await server.shutdown()
    assert app.supervisor is not first
    assert first.closed
    assert app.supervisor.closed


async def test_given_supervisor_serves_one_lifespan() -> None:
    """A supervisor passed in is not replaced: a second lifespan is refused."""
    sup = Supervisor(name="once")
    app = SupervisorMiddleware(no_lifespan_app, sup)
    async with drive_lifespan(app) as server:
        await server.startup()
        await server.shutdown()
    async with drive_lifespan(app) as server:
        reply = await server.startup()
    assert reply["type"] == "lifespan.startup.failed"
    assert "already shut down" in reply["message"]


async def test_cancelled_lifespan_still_shuts_the_supervisor_down() -> None:
    """If the server cancels the lifespan task, the nursery still closes in it."""
    app = SupervisorMiddleware(no_lifespan_app, name="cancelled", shutdown_timeout=5)
    sup = app.supervisor
    try:
        with anyio.CancelScope() as scope:
            async with drive_lifespan(app) as server:
                await server.startup()
                task = await sup.spawn(anyio.sleep_forever)
                scope.cancel()
                await server.finished()
        assert sup.closed
        assert task.state is TaskState.CANCELLED
        # Shut down means no longer running for current_supervisor() either.
        with pytest.raises(SupervisorNotStarted):
            current_supervisor()
    finally:
        # Keep a failure here from leaking a "running" supervisor into
        # every later test of the session.
        _registry.unregister(sup)


async def test_requests_are_bound_and_see_the_state() -> None:
    """Inside requests current_supervisor() is ours, even with another running."""
    seen: list[Any] = []

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            seen.append((current_supervisor(), scope["state"]["supervisor"]))
            seen.append(await add_background_task(anyio.sleep, 0))
        await no_lifespan_app(scope, receive, send)

    app = SupervisorMiddleware(handler, name="mine")
    async with Supervisor(name="other"), drive_lifespan(app) as server:
        await server.startup()
        status, _ = await call_http(app, state=dict(server.scope["state"]))
        assert status == 200
        await server.shutdown()
    (sup, in_state), task_id = seen
    assert sup is app.supervisor
    assert in_state is app.supervisor
    assert app.supervisor.get(task_id) is not None


async def test_server_without_state_still_gives_requests_the_supervisor() -> None:
    """No lifespan state support: requests still get ``scope['state']``."""
    seen: list[Any] = []

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            seen.append(scope["state"]["supervisor"])
        await no_lifespan_app(scope, receive, send)

    app = SupervisorMiddleware(handler, name="stateless")
    async with drive_lifespan(app, with_state=False) as server:
        await server.startup()
        assert "state" not in server.scope
        await call_http(app, state=None)
        await server.shutdown()
    assert seen == [app.supervisor]


async def test_bind_middleware_binds_what_the_state_holds() -> None:
    """BindSupervisorMiddleware binds from the state; without one, passes through."""
    seen: list[Any] = []

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            seen.append(current_supervisor().name)
        except SupervisorError as exc:
            seen.append(type(exc).__name__)
        await no_lifespan_app(scope, receive, send)

    app = BindSupervisorMiddleware(handler)
    async with Supervisor(name="a") as a, Supervisor(name="b"):
        await call_http(app, state={"supervisor": a})
        await call_http(app, state={})
        await call_http(app, state=None)
    assert seen == ["a", "SupervisorError", "SupervisorError"]


async def test_run_lifespan_rejects_a_protocol_error() -> None:
    """The first lifespan message must be startup."""
    sup = Supervisor(name="p")

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.shutdown"}

    async def send(message: Any) -> None:
        raise AssertionError("nothing to send")

    with pytest.raises(RuntimeError, match=r"expected 'lifespan\.startup'"):
        await run_lifespan(sup, no_lifespan_app, {"type": "lifespan"}, receive, send)
    assert not sup.running


def test_supervisor_and_options_are_exclusive() -> None:
    with pytest.raises(
        TypeError, match=r"SupervisorMiddleware\(\) got a supervisor.*not both"
    ):
        SupervisorMiddleware(no_lifespan_app, Supervisor(), name="x")


def test_supervisor_must_be_a_supervisor() -> None:
    with pytest.raises(TypeError, match=r"takes a supervisor\.Supervisor.*got 'app'"):
        SupervisorMiddleware(no_lifespan_app, "app")  # type: ignore[arg-type]


def test_options_are_checked_at_construction() -> None:
    """A bad option fails where it was written, not at the first lifespan."""
    with pytest.raises(ValueError, match="shutdown_timeout"):
        SupervisorMiddleware(no_lifespan_app, shutdown_timeout=-1)
    with pytest.raises(TypeError, match="nmae"):
        SupervisorMiddleware(no_lifespan_app, nmae="typo")


@pytest.mark.parametrize("when", ["startup", "midlife", "shutdown"])
async def test_inner_base_exception_shuts_down_then_propagates(when: str) -> None:
    """SystemExit & co. from the inner lifespan: supervisor down, raised as is."""
    sup = Supervisor(name="s", shutdown_timeout=0)
    serving = anyio.Event()

    async def fatal_app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        if when == "startup":
            raise Fatal(when)
        await send({"type": "lifespan.startup.complete"})
        if when == "midlife":
            await serving.wait()
            await current_supervisor().spawn(anyio.sleep_forever)
            raise Fatal(when)
        await receive()
        raise Fatal(when)

    async with drive_lifespan(SupervisorMiddleware(fatal_app, sup)) as server:
        await server._to_app.send({"type": "lifespan.startup"})
        if when != "startup":
            assert (await server._reply())["type"] == "lifespan.startup.complete"
            serving.set()
        if when == "shutdown":
            await server._to_app.send({"type": "lifespan.shutdown"})
        # No shutdown from the server is needed: the lifespan ends by itself.
        await server.finished()
        assert sup.closed
    assert type(server.error) is Fatal
    assert str(server.error) == when
    assert sup.stats().cancelled == (1 if when == "midlife" else 0)
    # The server heard no answer it did not ask for.
    assert [m["type"] for m in server.sent] == (
        [] if when == "startup" else ["lifespan.startup.complete"]
    )


@pytest.mark.parametrize("inner_kind", ["lifespan", "bare"])
async def test_server_protocol_error_after_startup_is_raised_as_is(
    inner_kind: str,
) -> None:
    """A server that sends nonsense: the supervisor closes, the error is plain."""
    inner: Any = LifespanApp(Supervisor()) if inner_kind == "lifespan" else None
    app = SupervisorMiddleware(inner or no_lifespan_app, name="p", shutdown_timeout=0)
    async with drive_lifespan(app) as server:
        await server.startup()
        task = await app.supervisor.spawn(anyio.sleep_forever)
        await server._to_app.send({"type": "lifespan.bogus"})
        await server.finished()
    assert type(server.error) is RuntimeError
    assert "expected 'lifespan.shutdown'" in str(server.error)
    assert "'lifespan.bogus'" in str(server.error)
    assert app.supervisor.closed
    assert task.state is TaskState.CANCELLED


class SpySupervisor(Supervisor):
    """Records the task that awaits startup() and shutdown()."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.hosts: list[tuple[str, int]] = []

    async def startup(self) -> None:
        self.hosts.append(("startup", anyio.get_current_task().id))
        await super().startup()

    async def shutdown(self, timeout: float | None = None) -> Any:
        self.hosts.append(("shutdown", anyio.get_current_task().id))
        return await super().shutdown(timeout)


async def test_startup_and_shutdown_are_awaited_in_the_lifespan_task() -> None:
    """Never in the child task that runs the inner app's lifespan."""
    sup = SpySupervisor(name="spy")
    inner = LifespanApp(sup)
    lifespan_task: list[int] = []
    middleware = SupervisorMiddleware(inner, sup)

    async def server_side(scope: Scope, receive: Receive, send: Send) -> None:
        lifespan_task.append(anyio.get_current_task().id)
        await middleware(scope, receive, send)

    async with drive_lifespan(server_side) as server:
        await server.startup()
        await server.shutdown()
    assert server.error is None
    (host,) = lifespan_task
    assert sup.hosts == [("startup", host), ("shutdown", host)]


async def test_other_messages_from_the_inner_app_reach_the_server() -> None:
    """A message that is not a lifespan answer is the server's to judge."""

    async def chatty(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.custom", "n": 1})
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})

    async with drive_lifespan(SupervisorMiddleware(chatty, name="c")) as server:
        assert (await server.startup())["type"] == "lifespan.custom"
        assert (await server._reply())["type"] == "lifespan.startup.complete"
        assert (await server.shutdown())["type"] == "lifespan.shutdown.complete"
    assert server.error is None


async def test_inner_lifespan_with_its_own_scopes_and_task_group() -> None:
    """The inner app nests scopes and a task group in its lifespan, as frameworks do.

    The supervisor's nursery was opened around the child task that runs
    them, so spawning from inside and shutting down afterwards is legal on
    both backends (the core raises SupervisorError when the nesting is wrong).
    """
    sup = Supervisor(name="nested", shutdown_timeout=0)
    spawned: list[BackgroundTask[Any]] = []

    async def framework(scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope():
                await receive()
                spawned.append(await current_supervisor().spawn(anyio.sleep_forever))
                tg.start_soon(anyio.sleep, 0)
                await send({"type": "lifespan.startup.complete"})
                await receive()
                spawned.append(await current_supervisor().spawn(anyio.sleep, 0))
                await send({"type": "lifespan.shutdown.complete"})

    async with drive_lifespan(SupervisorMiddleware(framework, sup)) as server:
        await server.startup()
        assert (await server.shutdown())["type"] == "lifespan.shutdown.complete"
    assert server.error is None
    assert [t.state for t in spawned] == [TaskState.CANCELLED, TaskState.SUCCEEDED]


def test_under_starlette_testclient(anyio_backend: str) -> None:
    """Starlette's TestClient drives the middleware's real lifespan on both backends."""
    pytest.importorskip("starlette")
    test_client = starlette_testclient()
    seen: list[Any] = []

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            task_id = await add_background_task(anyio.sleep, 0)
            seen.append(current_supervisor().get(task_id))
        await no_lifespan_app(scope, receive, send)

    app = SupervisorMiddleware(handler, name="tc", shutdown_timeout=5)
    with test_client(app, backend=anyio_backend) as client:
        assert client.get("/").status_code == 200
        assert app.supervisor.running
    assert app.supervisor.closed
    (task,) = seen
    assert task.state is TaskState.SUCCEEDED
