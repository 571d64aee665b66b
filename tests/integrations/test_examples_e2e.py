"""Every example, end to end, as a user would run it.

Each test starts an example under a real server process (uvicorn for
asyncio, hypercorn with ``--worker-class trio`` for trio) on a free port,
spawns tasks through real HTTP requests (they succeed, fail, run sync in a
thread, run forever), stops the server with SIGTERM, and then checks the
app's JSON log: every spawned task id has exactly one terminal line with the
right outcome, failures carry their traceback and the request's id, tasks
still running are cancelled with reason ``shutdown``, nothing is missing,
and the server exited within the shutdown timeout plus a small bound.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from functools import partial
from typing import Any

import pytest

from .conftest import (
    EXAMPLES,
    EXIT_BOUND,
    ServeFactory,
    Server,
    events,
    hypercorn_command,
    outcomes,
    uvicorn_command,
)

pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

import httpx

SHUTDOWN_TIMEOUT = 1.0


class Requests:
    """An HTTP client that records, per spawned task id, its request id and outcome."""

    def __init__(self, server: Server) -> None:
        self.client = httpx.Client(base_url=server.url, timeout=10.0)
        self.expected: dict[str, str] = {}
        self.request_ids: dict[str, str] = {}
        self._count = 0

    def spawn(
        self,
        method: str,
        path: str,
        outcome: str,
        *,
        request_id: bool = True,
        malformed_id: bool = False,
        **kw: Any,
    ) -> dict[str, Any]:
        """Send one request that spawns a task expected to end with ``outcome``.

        With ``malformed_id`` the request's ``X-Request-ID`` is one that the
        request-id middleware must refuse (a space in it): the id the server
        made instead comes back in the response and is on the task's line.
        """
        self._count += 1
        route = path.partition("?")[0].strip("/").replace("/", "-")
        rid = f"req-{self._count}-{route}"
        sent = f"{rid} with a space" if malformed_id else rid
        response = self.client.request(
            method, path, headers={"X-Request-ID": sent}, **kw
        )
        assert response.status_code == 200, response.text
        echoed = response.headers["x-request-id"]
        if malformed_id:
            assert re.fullmatch(r"[0-9a-f]{32}", echoed), echoed
            rid = echoed
        else:
            assert echoed == rid
        body: dict[str, Any] = response.json()
        task_id = body["task_id"]
        assert task_id not in self.expected
        self.expected[task_id] = outcome
        if request_id:
            self.request_ids[task_id] = rid
        return body

    def close(self) -> None:
        # Before SIGTERM: an idle keep-alive connection would only add to the
        # server's own graceful wait.
        self.client.close()


def check_log(server: Server, requests: Requests) -> list[dict[str, Any]]:
    """The assertions every example shares; returns the records for more."""
    records = server.records()
    by_id = outcomes(records)
    assert set(by_id) == set(requests.expected), "a task is missing or unexpected"
    for task_id, outcome in requests.expected.items():
        lines = by_id[task_id]
        assert len(lines) == 1, f"{task_id} has {len(lines)} terminal lines: {lines}"
        line = lines[0]
        assert line["event"] == f"task:{outcome}", line
        assert line["state"] == outcome
        assert line["level"] == {"succeeded": "debug", "failed": "error"}.get(
            outcome, "warning"
        )
        if task_id in requests.request_ids:
            assert line.get("request_id") == requests.request_ids[task_id], line
        if outcome == "failed":
            assert line["error_type"] == "ValueError"
            exception = line["exception"]  # dict_tracebacks: a list of stacks
            assert exception[-1]["exc_type"] == "ValueError"
            assert exception[-1]["frames"][-1]["name"] == "risky_task"
        if outcome == "cancelled":
            assert line["reason"] == "shutdown", line

    assert len(events(records, "supervisor:started")) == 1
    (shutdown,) = events(records, "supervisor:shutdown")
    wanted = list(requests.expected.values())
    totals = {k: shutdown[k] for k in ("spawned", "succeeded", "failed", "cancelled")}
    assert totals == {
        "spawned": len(wanted),
        "succeeded": wanted.count("succeeded"),
        "failed": wanted.count("failed"),
        "cancelled": wanted.count("cancelled"),
    }
    assert shutdown["cancelled_at_deadline"] == wanted.count("cancelled")
    assert shutdown["duration_s"] < SHUTDOWN_TIMEOUT + 1.0

    assert server.exit_seconds is not None
    assert server.exit_seconds < SHUTDOWN_TIMEOUT + EXIT_BOUND, server.output()
    return records


def stop(server: Server) -> None:
    server.terminate(timeout=SHUTDOWN_TIMEOUT + 15)


def test_qakeapi_under_uvicorn(serve: ServeFactory) -> None:
    """The seed's examples on the real qakeapi 1.3.1 under uvicorn."""
    pytest.importorskip("qakeapi")
    server = serve(partial(uvicorn_command, "qakeapi_app:app"))
    r = Requests(server)
    r.spawn("POST", "/users", "succeeded", json={"email": "a@example.com"})
    r.spawn(
        "POST",
        "/users",
        "succeeded",
        malformed_id=True,
        json={"email": "b@example.com"},
    )
    r.spawn("POST", "/reports", "succeeded", json={"rows": [1, 2, 3]})
    orders = {"id": 7, "user_id": 3, "items": ["a", "b", "c"]}
    r.spawn("POST", "/orders", "succeeded", json=orders)
    failed = r.spawn("POST", "/process", "failed", json={"item": 1})["task_id"]
    calc = r.spawn("POST", "/calculate", "succeeded", json={"numbers": [1, 2, 3]})
    assert calc["result"] == {"result": 6}  # wait=True: the result is in the answer
    # qakeapi runs sync handlers with run_in_executor, which drops the
    # request's contextvars: no request_id on that task's line.
    r.spawn("GET", "/sync-report?rows=4", "succeeded", request_id=False)
    r.spawn("POST", "/watch", "cancelled")
    r.spawn("POST", "/watch", "cancelled")
    status = r.client.get(f"/tasks/{calc['task_id']}").json()
    assert status["status"] == "completed"
    assert r.client.get("/tasks/nope").json() == {"status": "not_found"}
    r.close()
    stop(server)

    records = check_log(server, r)
    # app.emit is the event sink: the app's @app.react("task:failed") ran.
    (reacted,) = events(records, "example:task_failed_event")
    assert reacted["failed_task_id"] == failed
    # qakeapi ran its startup hooks twice (lifespan, then the first request)
    # but there was exactly one supervisor start, before the hooks.
    hooks = events(records, "example:startup_hook")
    assert len(hooks) == 2
    assert all(h["supervisor_running"] for h in hooks)
    # qakeapi's own shutdown hook raised, and the supervisor still shut down
    # after it, in the lifespan.
    (hook_failure,) = events(records, "qakeapi:shutdown_hooks_failed")
    assert hook_failure["error"] == "cannot join current thread"
    # Known qakeapi noise: one warning line, no traceback anywhere.
    assert hook_failure["level"] == "warning"
    assert "exception" not in hook_failure
    errors = [x for x in records if x["level"] == "error"]
    assert [x["event"] for x in errors] == ["task:failed"]
    assert "Traceback" not in server.output()
    order = [r["event"] for r in records]
    assert order.index("qakeapi:shutdown_hooks_failed") < order.index(
        "supervisor:shutdown"
    )
    output = server.output()
    assert "Application shutdown complete." in output
    # uvicorn re-raises the SIGTERM it caught once it has shut down.
    assert server.proc.returncode in (0, -signal.SIGTERM)


@pytest.mark.parametrize("module", ["starlette_app", "fastapi_app"])
def test_starlette_and_fastapi_under_uvicorn(serve: ServeFactory, module: str) -> None:
    """Lifespan helper, accessor/dependency, binding, sync endpoint in the pool."""
    pytest.importorskip(module.removesuffix("_app"))
    server = serve(partial(uvicorn_command, f"{module}:app"))
    r = Requests(server)
    r.spawn("POST", "/users", "succeeded", json={"email": "a@example.com"})
    r.spawn("POST", "/fail", "failed")
    r.spawn("POST", "/fail", "failed", malformed_id=True)
    # Sync endpoint in the thread pool: the request's context (request_id,
    # the bound supervisor) reaches the thread and the task it spawns.
    r.spawn("POST", "/sync-report?rows=5", "succeeded")
    watcher = r.spawn("POST", "/watch", "cancelled")["task_id"]
    assert r.client.get(f"/tasks/{watcher}").json()["status"] in ("pending", "running")
    r.close()
    stop(server)

    records = check_log(server, r)
    names = {x["task_id"]: x["task_name"] for x in records if "task_name" in x}
    assert names[watcher] == "watcher"
    assert "Application shutdown complete." in server.output()
    assert server.proc.returncode in (0, -signal.SIGTERM)


@pytest.mark.parametrize(
    ("name", "command", "loop"),
    [
        pytest.param(
            "hypercorn-trio",
            partial(hypercorn_command, "trio_hypercorn_app:app", worker_class="trio"),
            "trio",
            id="hypercorn-trio",
        ),
        pytest.param(
            "hypercorn-asyncio",
            partial(
                hypercorn_command, "trio_hypercorn_app:app", worker_class="asyncio"
            ),
            "asyncio",
            id="hypercorn-asyncio",
        ),
        pytest.param(
            "uvicorn",
            partial(uvicorn_command, "trio_hypercorn_app:app"),
            "asyncio",
            id="uvicorn",
        ),
    ],
)
def test_plain_asgi_app_with_middleware(
    serve: ServeFactory, name: str, command: Any, loop: str
) -> None:
    """SupervisorMiddleware around an app without lifespan support, trio and asyncio."""
    pytest.importorskip(name.split("-", maxsplit=1)[0])
    if loop == "trio":
        pytest.importorskip("trio")
    server = serve(command)
    r = Requests(server)
    assert r.client.get("/health").json()["event_loop"] == loop
    r.spawn("POST", "/spawn/ok", "succeeded")
    r.spawn("POST", "/spawn/ok", "succeeded", malformed_id=True)
    r.spawn("POST", "/spawn/fail", "failed")
    r.spawn("POST", "/spawn/sync", "succeeded")
    r.spawn("POST", "/spawn/forever", "cancelled")
    r.spawn("POST", "/spawn/forever", "cancelled")
    r.close()
    stop(server)

    records = check_log(server, r)
    (unsupported,) = events(records, "supervisor:asgi_lifespan_unsupported")
    assert unsupported["supervisor"] == "trio-example"
    assert server.proc.returncode in (0, -signal.SIGTERM)


def test_demo_runs_by_itself() -> None:
    """``python examples/demo.py`` (what ``./dev demo`` runs) succeeds, quickly."""
    pytest.importorskip("qakeapi")
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "demo.py")],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    elapsed = time.monotonic() - began
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "every task accounted for" in out
    assert "risky_task         failed" in out
    assert "watch_forever      cancelled" in out
    assert "reason=shutdown" in out
    assert "1 failure in 1 group" in out  # the failures CLI's summary
    assert elapsed < 30
