"""supervisor.otel under a real server: the request's trace holds the task's span.

uvicorn (asyncio) and hypercorn with its trio worker serve
``apps/otel_app.py`` on 127.0.0.1. A client sends ``POST /work`` with a W3C
``traceparent``; the handler continues that trace in a server span and
spawns a task, whose body opens a span too. After SIGTERM, the exported spans
(JSON lines) must chain client → request → task → the body's span in one
trace, and the task's span must say it succeeded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .conftest import APPS, ServeFactory, app_servers, outcomes

pytest.importorskip("httpx")
pytest.importorskip("opentelemetry.sdk")

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN_ID = "00f067aa0ba902b7"


_uvicorn, _hypercorn_trio = app_servers("otel_app:app")


def _spans(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


@pytest.mark.parametrize(
    ("server_name", "command"),
    [
        pytest.param("uvicorn", _uvicorn, id="uvicorn-asyncio"),
        pytest.param("hypercorn", _hypercorn_trio, id="hypercorn-trio"),
    ],
)
def test_request_trace_contains_the_task_span(
    serve: ServeFactory, tmp_path: Path, server_name: str, command: object
) -> None:
    """client span → request span → task span → body span, one trace id."""
    import httpx

    pytest.importorskip(server_name)
    if server_name == "hypercorn":
        pytest.importorskip("trio")
    spans_path = tmp_path / "spans.jsonl"
    server = serve(
        command,
        shutdown_timeout=1.0,
        env={"PYTHONPATH": str(APPS), "OTEL_SPANS_FILE": str(spans_path)},
    )
    response = httpx.post(
        f"{server.url}/work",
        headers={"traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN_ID}-01"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    task_id = response.json()["task_id"]
    server.terminate(timeout=15)

    spans = _spans(spans_path)
    by_name = {span["name"]: span for span in spans}
    assert set(by_name) == {"POST /work", "render_report", "render"}, spans
    request, task, body = (
        by_name["POST /work"],
        by_name["render_report"],
        by_name["render"],
    )
    assert {s["trace_id"] for s in spans} == {TRACE_ID}
    assert request["parent_id"] == CLIENT_SPAN_ID
    assert task["parent_id"] == request["span_id"]
    assert body["parent_id"] == task["span_id"]
    assert task["attributes"] == {
        "supervisor.name": "otel",
        "task.id": task_id,
        "task.name": "render_report",
        "task.attempt": 1,
        "task.state": "succeeded",
    }
    assert task["status"] == "UNSET"
    # The log agrees: the same task ended once, succeeded.
    (line,) = outcomes(server.records())[task_id]
    assert line["event"] == "task:succeeded"
