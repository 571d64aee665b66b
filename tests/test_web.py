"""supervisor.web: the task page's ASGI app, driven in process on both backends.

The page's JSON carries names, ids, states, times and tracebacks, never a
task's arguments or result; routes answer 404/405 as HTTP says; cancelling
exists only with ``authorize=`` and refuses cross-site requests. What a
person sees in a browser is tested in tests/integrations/test_web_browser.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

import supervisor.web
from supervisor import Supervisor, TaskState, bind

SECRET = "s3cr3t-argument-value"
HOSTILE_NAME = "<img src=x onerror=alert(1)>"


def client(asgi: Any, root: str = "") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=asgi, root_path=root)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture
async def sup() -> AsyncIterator[Supervisor]:
    with capture_logs():  # failures are logged; the tests read the page instead
        async with Supervisor(name="web", shutdown_timeout=1) as s:
            yield s


async def block(event: anyio.Event, secret: str) -> str:
    await event.wait()
    return secret


async def fail(secret: str) -> None:
    raise ValueError("boom\x1b[31m </script><script>alert(1)</script>\u202e")


async def get_json(asgi: Any, path: str = "/api/tasks") -> dict[str, Any]:
    async with client(asgi) as c:
        response = await c.get(path)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def test_json_shows_running_pending_failures_without_arguments(
    sup: Supervisor,
) -> None:
    """Running, pending and failed tasks are listed; no argument or result leaks."""
    release = anyio.Event()
    running = await sup.options(name=HOSTILE_NAME).spawn(block, release, SECRET)
    failed = await sup.options(name="fails").spawn(fail, SECRET)
    await failed.wait_done()
    page = supervisor.web.app(sup)

    data = await get_json(page)

    assert data["supervisor"] == {"name": "web", "state": "running"}
    assert data["stats"]["running"] == 1
    assert data["stats"]["failed"] == 1
    assert [t["task_id"] for t in data["running"]] == [running.task_id]
    assert data["running"][0]["name"] == HOSTILE_NAME
    assert data["running"][0]["state"] == "running"
    assert data["pending"] == []
    [failure] = data["failures"]
    assert failure["task_id"] == failed.task_id
    assert failure["error_type"] == "ValueError"
    # Terminal and bidi controls arrive as visible escapes, markup as text.
    assert failure["error"] == (
        "boom\\x1b[31m </script><script>alert(1)</script>\\u202e"
    )
    assert "in fail" in failure["traceback"]
    assert failure["traceback"].endswith("\\u202e")
    assert data["can_cancel"] is False
    assert SECRET not in json.dumps(data)
    release.set()
    assert await running.wait() == SECRET
    data = await get_json(page)
    assert data["running"] == []
    assert data["stats"]["succeeded"] == 1
    assert SECRET not in json.dumps(data)


async def test_pending_tasks_and_row_limits(anyio_backend: Any) -> None:
    """Tasks waiting for a slot are pending; tables stop at max_rows, count the rest."""
    release = anyio.Event()
    async with Supervisor(name="limits", max_concurrency=1, shutdown_timeout=1) as s:
        for i in range(4):
            await s.options(name=f"job-{i}").spawn(block, release, SECRET)
        data = await get_json(supervisor.web.app(s, max_rows=2))
        assert [t["name"] for t in data["running"]] == ["job-0"]
        assert [t["name"] for t in data["pending"]] == ["job-1", "job-2"]
        assert data["truncated"]["pending"] == 1
        assert data["stats"]["pending"] == 3
        release.set()


async def test_services_show_restart_counts(sup: Supervisor) -> None:
    """A service is listed with its restart strategy and live restart count."""
    restarted = anyio.Event()
    runs = 0

    async def flaky(*, task_status: Any) -> None:
        nonlocal runs
        runs += 1
        task_status.started()
        if runs == 1:
            raise RuntimeError("first run crashes")
        restarted.set()  # the restart was counted before this run began
        await anyio.sleep_forever()

    service = await sup.start_service(flaky, name="flaky", backoff=0)
    with anyio.fail_after(10):
        await restarted.wait()
    data = await get_json(supervisor.web.app(sup))
    [row] = data["services"]
    assert row["task_id"] == service.task.task_id
    assert row["name"] == "flaky"
    assert row["restart"] == "permanent"
    assert row["restarts"] == 1
    assert row["state"] == "running"


async def test_tracebacks_are_cut_to_their_end(sup: Supervisor) -> None:
    """A long traceback keeps its last traceback_chars characters (where it failed)."""

    async def deep(n: int) -> None:
        if n == 0:
            raise KeyError("the bottom")
        await deep(n - 1)

    task = await sup.spawn(deep, 60)
    await task.wait_done()
    data = await get_json(supervisor.web.app(sup, traceback_chars=300))
    text = data["failures"][0]["traceback"]
    assert text.startswith("[")
    assert "characters cut]" in text
    assert text.endswith("KeyError: 'the bottom'")
    assert len(text) < 400


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


async def test_hostile_exceptions_and_long_names_do_not_break_the_page(
    sup: Supervisor,
) -> None:
    """An exception whose str() raises, and a 10 kB name, still give a page."""

    async def raise_unprintable() -> None:
        raise Unprintable

    task = await sup.options(name="x" * 10_000).spawn(raise_unprintable)
    await task.wait_done()
    data = await get_json(supervisor.web.app(sup))
    [failure] = data["failures"]
    assert failure["error"] == "<str() of Unprintable raised RuntimeError>"
    assert failure["error_type"] == "Unprintable"
    assert "raise_unprintable" in failure["traceback"]
    assert failure["name"] == "x" * 200 + "…"


async def test_failures_newest_first_and_bounded(sup: Supervisor) -> None:
    """At most max_failures failures, the newest first; the rest are counted."""
    for i in range(5):
        task = await sup.options(name=f"fail-{i}").spawn(fail, SECRET)
        await task.wait_done()
    data = await get_json(supervisor.web.app(sup, max_failures=2))
    assert [f["name"] for f in data["failures"]] == ["fail-4", "fail-3"]
    assert data["truncated"]["failures"] == 3


async def test_page_and_assets_are_served_with_strict_headers(sup: Supervisor) -> None:
    """The page, its script and style come with CSP, nosniff and no-store."""
    page = supervisor.web.app(sup, title="<Ops & co>", poll_interval=2.5)
    async with client(page) as c:
        html = await c.get("/")
        script = await c.get("/app.js")
        style = await c.get("/app.css")
        head = await c.head("/")
        api_head = await c.head("/api/tasks")
        api = await c.get("/api/tasks")
    assert html.status_code == 200
    assert html.headers["content-type"] == "text/html; charset=utf-8"
    assert "<h1>&lt;Ops &amp; co&gt;</h1>" in html.text
    assert 'data-poll-ms="2500"' in html.text
    assert "<script>" not in html.text  # no inline script: the CSP forbids it
    assert script.headers["content-type"].startswith("text/javascript")
    assert "innerHTML" not in script.text.replace("No innerHTML", "")
    assert style.headers["content-type"].startswith("text/css")
    assert head.status_code == 200
    assert head.content == b""
    # HEAD tells the length GET would send (RFC 9110), without the body.
    assert head.headers["content-length"] == str(len(html.content))
    assert api_head.content == b""
    assert int(api_head.headers["content-length"]) > 0
    assert api.headers["content-type"] == "application/json"
    for response in (html, script, style):
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"


async def test_routes_404_and_405(sup: Supervisor) -> None:
    """Unknown paths 404, wrong methods 405 with Allow; no cancel route by default."""
    page = supervisor.web.app(sup)
    async with client(page) as c:
        assert (await c.get("/nope")).status_code == 404
        assert (await c.get("/api/tasks/x")).status_code == 404
        wrong = await c.post("/api/tasks")
        assert wrong.status_code == 405
        assert wrong.headers["allow"] == "GET, HEAD"
        assert (await c.post("/")).status_code == 405
        assert (await c.delete("/app.js")).status_code == 405
        refused = await c.post("/api/tasks/abc/cancel", json={})
        assert refused.status_code == 404


async def test_mounted_under_a_prefix(sup: Supervisor) -> None:
    """Under root_path the routes are relative to it; the bare prefix redirects."""
    page = supervisor.web.app(sup)
    async with client(page, root="/ops/tasks") as c:
        assert (await c.get("/ops/tasks/api/tasks")).status_code == 200
        bare = await c.get("/ops/tasks")
        assert bare.status_code == 307
        assert bare.headers["location"] == "/ops/tasks/"
        assert (await c.get("/ops/tasks/")).text.startswith("<!doctype html>")


def allow_all(scope: Any) -> bool:
    return True


async def allow_all_async(scope: Any) -> bool:
    await anyio.lowlevel.checkpoint()
    return True


@pytest.mark.parametrize("authorize", [allow_all, allow_all_async])
async def test_cancel_with_authorize(
    sup: Supervisor, authorize: Callable[[Any], bool | Awaitable[bool]]
) -> None:
    """With authorize saying yes, a POST cancels the task: it ends CANCELLED."""
    task = await sup.spawn(block, anyio.Event(), SECRET)
    page = supervisor.web.app(sup, authorize=authorize)
    assert (await get_json(page))["can_cancel"] is True
    async with client(page) as c:
        response = await c.post(f"/api/tasks/{task.task_id}/cancel", json={})
        assert response.status_code == 200
        assert response.json()["cancelled"] is True
        await task.wait_done()
        assert task.state is TaskState.CANCELLED
        assert task.cancel_reason == "cancelled from the task page"
        again = await c.post(f"/api/tasks/{task.task_id}/cancel", json={})
        assert again.json() == {
            "task_id": task.task_id,
            "cancelled": False,
            "state": "cancelled",
        }
        missing = await c.post("/api/tasks/no-such-id/cancel", json={})
        assert missing.status_code == 404
        assert (await c.get(f"/api/tasks/{task.task_id}/cancel")).status_code == 405


async def test_cancel_refused_by_authorize(sup: Supervisor) -> None:
    """authorize saying no: 403, the task runs on, and the page shows no buttons."""
    seen: list[str] = []

    def deny(scope: Any) -> bool:
        seen.append(scope["path"])
        return False

    task = await sup.spawn(block, anyio.Event(), SECRET)
    page = supervisor.web.app(sup, authorize=deny)
    assert (await get_json(page))["can_cancel"] is False
    async with client(page) as c:
        response = await c.post(f"/api/tasks/{task.task_id}/cancel", json={})
    assert response.status_code == 403
    assert not task.done
    assert seen == ["/api/tasks", f"/api/tasks/{task.task_id}/cancel"]


async def test_authorize_must_return_a_bool(sup: Supervisor) -> None:
    """An authorize that returns None is a bug, said loudly, never a yes."""
    task = await sup.spawn(block, anyio.Event(), SECRET)
    page = supervisor.web.app(sup, authorize=lambda scope: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match=r"must return True or False"):
        async with client(page) as c:
            await c.post(f"/api/tasks/{task.task_id}/cancel", json={})
    assert not task.done


async def test_cancel_refuses_cross_site_requests(sup: Supervisor) -> None:
    """A form post, another Origin or a cross-site fetch cannot cancel (CSRF)."""
    task = await sup.spawn(block, anyio.Event(), SECRET)
    page = supervisor.web.app(sup, authorize=allow_all)
    url = f"/api/tasks/{task.task_id}/cancel"
    async with client(page) as c:
        form = await c.post(url, data={"reason": "x"})
        assert form.status_code == 415
        plain = await c.post(url, content=b"{}", headers={"content-type": "text/plain"})
        assert plain.status_code == 415
        other = await c.post(url, json={}, headers={"origin": "https://evil.example"})
        assert other.status_code == 403
        meta = {"sec-fetch-site": "cross-site"}
        fetch_meta = await c.post(url, json={}, headers=meta)
        assert fetch_meta.status_code == 403
        not_object = await c.post(url, json=[1])
        assert not_object.status_code == 400
        same = await c.post(url, json={}, headers={"origin": "http://testserver"})
        assert same.status_code == 200
    await task.wait_done()
    assert task.state is TaskState.CANCELLED


async def test_current_supervisor_is_resolved_per_request(anyio_backend: Any) -> None:
    """Without supervisor=, each request shows the supervisor bound to it."""
    page = supervisor.web.app()
    with capture_logs():
        async with Supervisor(name="one") as one, Supervisor(name="two") as two:
            with bind(one):
                assert (await get_json(page))["supervisor"]["name"] == "one"
            with bind(two):
                assert (await get_json(page))["supervisor"]["name"] == "two"
            async with client(page) as c:
                several = await c.get("/api/tasks")
            assert several.status_code == 503
            assert "several supervisors are running" in several.json()["error"]


async def test_503_when_no_supervisor_runs(anyio_backend: Any) -> None:
    """No supervisor: the JSON says why (503); the page itself still loads."""
    page = supervisor.web.app(authorize=allow_all)
    async with client(page) as c:
        response = await c.get("/api/tasks")
        assert response.status_code == 503
        assert "no supervisor is running" in response.json()["error"]
        cancel = await c.post("/api/tasks/x/cancel", json={})
        assert cancel.status_code == 503
        assert (await c.get("/")).status_code == 200


async def test_shut_down_supervisor_is_shown_closed(anyio_backend: Any) -> None:
    """A supervisor given explicitly stays visible after shutdown, marked closed."""
    with capture_logs():
        async with Supervisor(name="gone") as s:
            await (await s.spawn(fail, SECRET)).wait_done()
    data = await get_json(supervisor.web.app(s))
    assert data["supervisor"]["state"] == "closed"
    assert data["stats"]["failed"] == 1


async def test_lifespan_and_websocket_are_answered(anyio_backend: Any) -> None:
    """Served on its own, the page acknowledges the lifespan and closes websockets."""
    page = supervisor.web.app()
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await page({"type": "lifespan"}, receive, send)
    await page({"type": "websocket"}, receive, send)
    assert [m["type"] for m in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
        "websocket.close",
    ]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"supervisor": "app"}, TypeError, r"takes a Supervisor or None"),
        ({"authorize": True}, TypeError, r"authorize=\.\.\.\) must be a callable"),
        ({"poll_interval": 0}, ValueError, r"poll_interval=.*positive"),
        ({"poll_interval": 0.01}, ValueError, r"poll_interval"),
        ({"poll_interval": "1"}, TypeError, r"must be a number of seconds"),
        ({"title": ""}, ValueError, r"title=\.\.\.\) must be a non-empty str"),
        ({"max_rows": 0}, ValueError, r"max_rows"),
        ({"max_failures": 1.5}, TypeError, r"max_failures"),
        ({"traceback_chars": 10}, ValueError, r"traceback_chars"),
    ],
)
def test_bad_arguments_say_what_to_pass(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    """Each bad argument fails at app(), naming the argument and the fix."""
    with pytest.raises(error, match=match):
        supervisor.web.app(**kwargs)
