"""supervisor.qakeapi on the real qakeapi 1.3.1, driven by Starlette's TestClient.

qakeapi itself is asyncio-only (``run_hybrid`` calls
``asyncio.get_event_loop()``), so these tests run on asyncio alone; the
end-to-end test runs the same integration under uvicorn.
"""

# No `from __future__ import annotations`: qakeapi reads handler annotations
# at runtime (``rows: int``, ``websocket: WebSocket``) and does not resolve
# string annotations.

from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import structlog

pytest.importorskip("qakeapi")

from qakeapi import QakeAPI
from qakeapi.core.websocket import WebSocket

import supervisor.qakeapi
from supervisor import (
    BackgroundTaskManager,
    Supervisor,
    SupervisorError,
    TaskState,
    add_background_task,
    current_supervisor,
)

from .conftest import starlette_testclient

TestClient = starlette_testclient()


@pytest.fixture(autouse=True)
def _fresh_qakeapi_executor() -> Iterator[None]:
    """Undo qakeapi's process-wide executor poisoning between tests.

    qakeapi 1.3.1 keeps one global thread pool for sync handlers and hooks.
    Its shutdown hook calls ``shutdown()`` on that pool from inside it: the
    join raises, but the pool is already marked shut down while qakeapi's own
    flag is not, so every later sync handler or hook in the process fails
    with "cannot schedule new futures after shutdown". A server runs one
    lifespan per process and never sees it; tests run many.
    """
    from qakeapi.core import hybrid

    hybrid._executor = None
    yield
    hybrid._executor = None


async def fails(item: int) -> None:
    raise ValueError(f"bad item {item}")


def report(rows: int) -> int:
    return sum(range(rows))


def make_app(name: str) -> tuple[QakeAPI, Supervisor, dict[str, list[Any]]]:
    """A qakeapi app with the integration installed, recording what it saw."""
    app = QakeAPI(title=name)
    seen: dict[str, list[Any]] = {"startup": [], "events": [], "shutdown": []}
    sup = supervisor.qakeapi.install(app, name=name, shutdown_timeout=5)

    @app.on_startup
    async def on_startup() -> None:
        seen["startup"].append(sup.running)

    @app.on_shutdown
    async def after_the_builtin_hook() -> None:  # never runs: see test below
        seen["shutdown"].append(sup.running)  # pragma: no cover

    @app.react("task:failed")
    async def on_failed(event: Any) -> None:
        seen["events"].append(("task:failed", event.data))

    @app.react("task:succeeded")
    async def on_succeeded(event: Any) -> None:
        seen["events"].append(("task:succeeded", event.data))

    @app.post("/ok")
    async def ok(request: Any) -> dict[str, Any]:
        task_id = await add_background_task(anyio.sleep, 0)
        return {"task_id": task_id, "name": current_supervisor().name}

    @app.post("/fail")
    async def fail(request: Any) -> dict[str, Any]:
        return {"task_id": await add_background_task(fails, item=3)}

    @app.post("/wait")
    async def wait(request: Any) -> dict[str, Any]:
        manager = BackgroundTaskManager()
        task_id = await manager.add_task(report, 5, wait=True)
        return {"result": manager.tasks[task_id].result}

    @app.get("/sync")
    def sync(rows: int = 3) -> dict[str, Any]:
        # qakeapi runs sync handlers in its own pool, without the request's
        # context: use the supervisor install() returned.
        return {"task_id": sup.spawn_threadsafe(report, rows)}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"name": current_supervisor().name})
        await websocket.close()

    return app, sup, seen


def test_install_runs_one_supervisor_in_the_lifespan() -> None:
    """One start in the lifespan, events through app.emit, shutdown despite qakeapi."""
    app, sup, seen = make_app("q")
    with structlog.testing.capture_logs() as logs:
        with TestClient(app, backend="asyncio") as client:
            assert sup.running
            ok_id = client.post("/ok").json()["task_id"]
            fail_id = client.post("/fail").json()["task_id"]
            assert client.post("/wait").json() == {"result": 10}
            sync_id = client.get("/sync", params={"rows": 4}).json()["task_id"]
        assert sup.closed

    # qakeapi ran the startup hooks twice (lifespan, first request); the
    # supervisor was running both times and started exactly once.
    assert seen["startup"] == [True, True]
    assert [x["event"] for x in logs].count("supervisor:started") == 1
    # Its built-in shutdown hook raised, so later hooks never ran; the
    # supervisor was shut down anyway, and the failure is in the log.
    assert seen["shutdown"] == []
    (hooks,) = [x for x in logs if x["event"] == "qakeapi:shutdown_hooks_failed"]
    assert hooks["error"] == "cannot join current thread"
    assert hooks["skipped_hooks"] == ["make_app.<locals>.after_the_builtin_hook"]
    events = [x["event"] for x in logs]
    assert events.index("qakeapi:shutdown_hooks_failed") < events.index(
        "supervisor:shutdown"
    )

    states = {tid: sup.get(tid) for tid in (ok_id, fail_id, sync_id)}
    assert {t.state for t in states.values() if t} == {
        TaskState.SUCCEEDED,
        TaskState.FAILED,
    }
    assert states[sync_id] is not None
    assert states[sync_id].result == 6  # type: ignore[union-attr]
    # app.emit is the event sink: @app.react handlers saw the outcomes.
    failed = [d for name, d in seen["events"] if name == "task:failed"]
    assert [d["task_id"] for d in failed] == [fail_id]
    assert failed[0]["error"] == "bad item 3"
    assert failed[0]["error_type"] == "ValueError"
    succeeded = {d["task_id"] for name, d in seen["events"] if name == "task:succeeded"}
    assert {ok_id, sync_id} <= succeeded


def test_qakeapis_known_hook_failure_is_one_warning_line() -> None:
    """qakeapi 1.3.1's shutdown bug: once per shutdown, at warning, no traceback."""
    app, sup, _ = make_app("quiet")
    with structlog.testing.capture_logs() as logs, TestClient(app) as client:
        client.post("/ok")
    (line,) = [x for x in logs if x["event"].startswith("qakeapi:")]
    assert line["event"] == "qakeapi:shutdown_hooks_failed"
    assert line["log_level"] == "warning"
    assert "exc_info" not in line
    assert "\n" not in line["reason"]
    assert "shutdown_executor" in line["reason"]
    assert [x["log_level"] for x in logs if x["log_level"] == "error"] == []
    assert sup.closed


def test_another_hook_failure_is_an_error_with_its_traceback() -> None:
    """A hook of the app's own that raises is a real error: logged as one."""
    app, sup, _ = make_app("loud")

    async def flush_metrics() -> None:
        raise ConnectionError("metrics backend down")

    # Before qakeapi's own hook, so that this one is what raises.
    app._shutdown_handlers.insert(0, flush_metrics)
    with structlog.testing.capture_logs() as logs, TestClient(app, backend="asyncio"):
        pass
    (line,) = [x for x in logs if x["event"] == "qakeapi:shutdown_hooks_failed"]
    assert line["log_level"] == "error"
    assert isinstance(line["exc_info"], ConnectionError)
    assert line["error_type"] == "ConnectionError"
    assert "flush_metrics" in line["hooks"][0]
    assert sup.closed


def test_another_qakeapi_version_is_patched_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An untested qakeapi: install() says so, and the integration still works."""
    import qakeapi

    monkeypatch.setattr(qakeapi, "__version__", "1.4.0")
    app = QakeAPI()
    with structlog.testing.capture_logs() as logs:
        sup = supervisor.qakeapi.install(app, name="newer")

        @app.post("/ok")
        async def ok(request: Any) -> dict[str, Any]:
            return {"task_id": await add_background_task(anyio.sleep, 0)}

        with TestClient(app, backend="asyncio") as client:
            task_id = client.post("/ok").json()["task_id"]
    (warning,) = [x for x in logs if x["event"] == "qakeapi:version_untested"]
    assert warning["log_level"] == "warning"
    assert warning["qakeapi_version"] == "1.4.0"
    assert warning["tested_version"] == "1.3.1"
    task = sup.get(task_id)
    assert task is not None
    assert task.state is TaskState.SUCCEEDED


def test_a_qakeapi_without_the_patched_internals_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nothing is changed on an app whose internals are not the ones we patch."""
    import qakeapi

    monkeypatch.setattr(qakeapi, "__version__", "2.0.0")
    app = QakeAPI()
    del app._shutdown_handlers
    with pytest.raises(
        SupervisorError,
        match=r"supports qakeapi 1\.3\.1, found '2\.0\.0'.*\['_shutdown_handlers'\]",
    ):
        supervisor.qakeapi.install(app)
    assert "_handle_lifespan" not in vars(app)
    assert app._middleware == []
    with pytest.raises(LookupError):
        supervisor.qakeapi.get_supervisor(app)


def test_a_fresh_supervisor_for_each_lifespan() -> None:
    """Owned supervisors are renewed per lifespan; get_supervisor() has the current."""
    app, first, _ = make_app("again")
    with TestClient(app, backend="asyncio") as client:
        assert client.post("/ok").json()["name"] == "again"
    second_run = supervisor.qakeapi.get_supervisor(app)
    assert second_run is first  # not renewed until the next lifespan
    with TestClient(app, backend="asyncio") as client:
        second = supervisor.qakeapi.get_supervisor(app)
        assert second is not first
        assert second.running
        task_id = client.post("/ok").json()["task_id"]
    assert first.closed
    assert second.closed
    assert first.get(task_id) is None
    assert second.get(task_id) is not None


def test_request_ids_on_the_tasks_log_lines() -> None:
    """supervisor.qakeapi.RequestIdMiddleware: the id on the task's line and echoed."""
    app, _, _ = make_app("ids")
    app.add_middleware(supervisor.qakeapi.RequestIdMiddleware())
    with (
        structlog.testing.capture_logs(
            processors=[structlog.contextvars.merge_contextvars]
        ) as logs,
        TestClient(app, backend="asyncio") as client,
    ):
        response = client.post("/fail", headers={"X-Request-ID": "q-1"})
        generated = client.post("/fail", headers={"X-Request-ID": "bad id"})
    assert response.headers["x-request-id"] == "q-1"
    new_id = generated.headers["x-request-id"]
    assert len(new_id) == 32
    failed = {
        x["task_id"]: x["request_id"] for x in logs if x["event"] == "task:failed"
    }
    assert failed == {
        response.json()["task_id"]: "q-1",
        generated.json()["task_id"]: new_id,
    }


def test_qakeapi_request_id_options_are_checked() -> None:
    with pytest.raises(ValueError, match="Python identifier"):
        supervisor.qakeapi.RequestIdMiddleware(key="not valid")
    with pytest.raises(TypeError, match="must be a bool"):
        supervisor.qakeapi.RequestIdMiddleware(response_header=1)  # type: ignore[arg-type]


def test_requests_are_bound_with_two_apps_running() -> None:
    """Two qakeapi apps at once: each request finds its own app's supervisor."""
    first, _, _ = make_app("first")
    second, _, _ = make_app("second")
    with (
        TestClient(first, backend="asyncio") as a,
        TestClient(second, backend="asyncio") as b,
    ):
        assert a.post("/ok").json()["name"] == "first"
        assert b.post("/ok").json()["name"] == "second"
        with a.websocket_connect("/ws") as ws:
            assert ws.receive_json() == {"name": "first"}


def test_given_supervisor_gets_app_emit_unless_it_has_a_handler() -> None:
    app = QakeAPI()
    bare = Supervisor(name="bare")
    assert supervisor.qakeapi.install(app, bare) is bare
    assert bare.on_event == app.emit

    def mine(event: str, data: dict[str, Any]) -> None:
        """The application's own handler."""

    other = QakeAPI()
    handled = Supervisor(name="handled", on_event=mine)
    supervisor.qakeapi.install(other, handled)
    assert handled.on_event is mine

    quiet = QakeAPI()
    assert supervisor.qakeapi.install(quiet, events=False).on_event is None


def test_a_used_supervisor_fails_the_startup() -> None:
    """A shut-down supervisor cannot serve the lifespan: the app does not start."""
    sup = Supervisor(name="used")
    anyio.run(sup.shutdown)
    app = QakeAPI()
    supervisor.qakeapi.install(app, sup)
    with (
        pytest.raises(SupervisorError, match="'used' is already shut down"),
        TestClient(app, backend="asyncio"),
    ):
        pass  # pragma: no cover


def test_install_once_per_app() -> None:
    app = QakeAPI()
    sup = supervisor.qakeapi.install(app)
    assert supervisor.qakeapi.get_supervisor(app) is sup
    with pytest.raises(SupervisorError, match="install\\(\\) once per app"):
        supervisor.qakeapi.install(app)


def test_install_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match=r"qakeapi\.QakeAPI app"):
        supervisor.qakeapi.install(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"install\(\) got a supervisor.*not both"):
        supervisor.qakeapi.install(QakeAPI(), Supervisor(), name="x")
    with pytest.raises(ValueError, match="history"):
        supervisor.qakeapi.install(QakeAPI(), history=-1)


def test_get_supervisor_without_install_says_what_to_do() -> None:
    with pytest.raises(LookupError, match=r"supervisor\.qakeapi\.install\(app\)"):
        supervisor.qakeapi.get_supervisor(QakeAPI())
