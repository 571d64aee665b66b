"""RequestIdMiddleware: one well-formed id per request, on its tasks' log lines.

In process, on asyncio and trio: the middleware around a bare ASGI app and
around SupervisorMiddleware, driven by hand-played calls.
"""

from __future__ import annotations

import re
from typing import Any

import anyio
import pytest
import structlog

from supervisor import Supervisor, add_background_task
from supervisor.asgi import (
    Receive,
    RequestIdMiddleware,
    Scope,
    Send,
    SupervisorMiddleware,
)

from .conftest import drive_lifespan

GENERATED = re.compile(r"[0-9a-f]{32}")


def http_scope(headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "method": "GET",
        "path": "/",
        "headers": headers or [],
        "state": {},
    }


class Recorder:
    """An inner app that records the bound request id and answers 200."""

    def __init__(self, *, own_header: bytes | None = None) -> None:
        self.seen: list[Any] = []
        self.own_header = own_header

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.seen.append(structlog.contextvars.get_contextvars().get("request_id"))
        if scope["type"] != "http":
            return
        headers = (
            [] if self.own_header is None else [(b"x-request-id", self.own_header)]
        )
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


async def call(
    app: Any, scope: dict[str, Any]
) -> tuple[dict[str, Any] | None, list[tuple[bytes, bytes]]]:
    """Call ``app`` once; returns the response start message and its headers."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next((m for m in sent if m["type"] == "http.response.start"), None)
    return start, [] if start is None else list(start["headers"])


@pytest.mark.parametrize(
    "value",
    [
        b"req-42",
        b"0f9c2d4e-8a1b-4c3d-9e2f-1a2b3c4d5e6f",
        b"01ARZ3NDEKTSV4RRFFQ69G5FAV",
        b"Root=1-5759e988-bd862e3fe1be46a994272793",
        b"a:b.c_d+e/f=",
        b"x" * 128,
    ],
)
async def test_a_well_formed_header_is_used_and_echoed(value: bytes) -> None:
    inner = Recorder()
    _, headers = await call(
        RequestIdMiddleware(inner), http_scope([(b"x-request-id", value)])
    )
    assert inner.seen == [value.decode()]
    assert headers == [(b"x-request-id", value)]


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"x" * 129,  # too long
        b"two words",
        b"line\nbreak",
        b'quote"d',
        b"semi;colon",
        "caf\u00e9".encode(),  # not ASCII
        b"\xff\xfe",
    ],
)
async def test_a_malformed_header_is_replaced(value: bytes) -> None:
    """A client cannot put newlines, quotes or a megabyte into every log line."""
    inner = Recorder()
    _, headers = await call(
        RequestIdMiddleware(inner), http_scope([(b"x-request-id", value)])
    )
    (request_id,) = inner.seen
    assert GENERATED.fullmatch(request_id)
    assert headers == [(b"x-request-id", request_id.encode())]


async def test_without_a_header_each_request_gets_a_fresh_id() -> None:
    inner = Recorder()
    app = RequestIdMiddleware(inner)
    await call(app, http_scope())
    await call(app, http_scope([(b"other", b"x")]))
    first, second = inner.seen
    assert GENERATED.fullmatch(first)
    assert GENERATED.fullmatch(second)
    assert first != second


async def test_the_binding_ends_with_the_request() -> None:
    inner = Recorder()
    structlog.contextvars.bind_contextvars(request_id="outer")
    try:
        await call(
            RequestIdMiddleware(inner), http_scope([(b"x-request-id", b"inner")])
        )
        assert structlog.contextvars.get_contextvars()["request_id"] == "outer"
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    assert inner.seen == ["inner"]


async def test_concurrent_requests_keep_their_own_ids() -> None:
    """Each request's id lives in its own task's context."""
    both_inside = anyio.Event()
    arrived = 0
    seen: dict[str, str] = {}

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal arrived
        arrived += 1
        if arrived == 2:
            both_inside.set()
        await both_inside.wait()
        rid = structlog.contextvars.get_contextvars()["request_id"]
        seen[dict(scope["headers"])[b"x-request-id"].decode()] = rid

    app = RequestIdMiddleware(slow, response_header=False)
    async with anyio.create_task_group() as tg:
        for rid in (b"a-1", b"b-2"):
            tg.start_soon(call, app, http_scope([(b"x-request-id", rid)]))
    assert seen == {"a-1": "a-1", "b-2": "b-2"}


async def test_an_app_that_sets_the_header_itself_keeps_it() -> None:
    inner = Recorder(own_header=b"mine")
    _, headers = await call(
        RequestIdMiddleware(inner), http_scope([(b"x-request-id", b"theirs")])
    )
    assert headers == [(b"x-request-id", b"mine")]


async def test_custom_header_key_and_length() -> None:
    seen: list[dict[str, Any]] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(structlog.contextvars.get_contextvars())
        await send({"type": "http.response.start", "status": 204, "headers": []})

    app = RequestIdMiddleware(
        inner, header="X-Correlation-ID", key="correlation_id", max_length=4
    )
    _, headers = await call(app, http_scope([(b"x-correlation-id", b"abcd")]))
    assert seen[-1] == {"correlation_id": "abcd"}
    assert headers == [(b"x-correlation-id", b"abcd")]
    await call(app, http_scope([(b"x-correlation-id", b"abcde")]))
    assert GENERATED.fullmatch(seen[-1]["correlation_id"])


async def test_no_response_header_when_turned_off() -> None:
    inner = Recorder()
    _, headers = await call(
        RequestIdMiddleware(inner, response_header=False),
        http_scope([(b"x-request-id", b"r1")]),
    )
    assert inner.seen == ["r1"]
    assert headers == []


async def test_websocket_is_bound_and_lifespan_passes_through() -> None:
    """Websockets get an id for the connection; the lifespan is left alone."""
    inner = Recorder()
    app = RequestIdMiddleware(SupervisorMiddleware(inner, name="ids"))
    async with drive_lifespan(app) as server:
        assert (await server.startup())["type"] == "lifespan.startup.complete"
        scope = {**http_scope([(b"x-request-id", b"ws-1")]), "type": "websocket"}
        await call(app, scope)
        assert (await server.shutdown())["type"] == "lifespan.shutdown.complete"
    assert server.error is None
    # The inner app saw the lifespan (no lifespan support: it returned) without
    # an id, and the websocket with one.
    assert inner.seen == [None, "ws-1"]


async def test_tasks_log_lines_carry_the_request_id() -> None:
    """The point of it all: a failing task's line names the request behind it."""

    async def fails() -> None:
        raise ValueError("boom")

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await add_background_task(fails)
            await send({"type": "http.response.start", "status": 202, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    sup = Supervisor(name="rid", shutdown_timeout=5)
    app = RequestIdMiddleware(SupervisorMiddleware(handler, sup))
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        async with drive_lifespan(app) as server:
            await server.startup()
            await call(app, http_scope([(b"x-request-id", b"req-7")]))
            await sup.wait_idle()
            await server.shutdown()
    (failed,) = [x for x in logs if x["event"] == "task:failed"]
    assert failed["request_id"] == "req-7"
    assert failed["error"] == "boom"
    # Lines of the lifespan itself carry no request id.
    (shutdown,) = [x for x in logs if x["event"] == "supervisor:shutdown"]
    assert "request_id" not in shutdown


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"header": "X Request"}, ValueError, r"HTTP header name.*'X Request'"),
        ({"header": ""}, ValueError, "HTTP header name"),
        ({"key": "request-id"}, ValueError, r"Python identifier.*'request-id'"),
        ({"max_length": 0}, ValueError, r"from 1 to 1024.*got 0"),
        ({"max_length": 5000}, ValueError, "from 1 to 1024"),
        ({"max_length": True}, ValueError, "got True"),
        ({"max_length": "64"}, ValueError, "got '64'"),
        ({"response_header": "yes"}, TypeError, "must be a bool, got 'yes'"),
    ],
)
def test_bad_options_are_refused_at_construction(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        RequestIdMiddleware(Recorder(), **options)


def test_wraps_only_an_app() -> None:
    with pytest.raises(TypeError, match="wraps an ASGI app, got 3"):
        RequestIdMiddleware(3)  # type: ignore[arg-type]
