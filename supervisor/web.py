"""A live task page for operators: an ASGI app to mount under any prefix.

``supervisor.web.app()`` returns a plain ASGI 3 application (no framework
import) that shows a supervisor's statistics, its running and pending tasks,
its services with their restart counts, and its recent failures with their
tracebacks, refreshed in the browser every ``poll_interval`` seconds::

    app.mount("/tasks", supervisor.web.app())          # Starlette, FastAPI

Routes, relative to where it is mounted (``scope["root_path"]``):

* ``GET /``: the page (static HTML; ``app.js`` and ``app.css`` beside it);
* ``GET /api/tasks``: the same data as JSON, for scripts and health checks;
* ``POST /api/tasks/{task_id}/cancel``: only with ``authorize=``.

Design, and why:

* **Polling, not server-sent events.** An open page holds no connection
  between polls, so it never keeps a server's graceful shutdown waiting
  (uvicorn waits for open responses before it runs the lifespan shutdown
  that drains the supervisor).
* **Nothing from task arguments, results or kwargs is sent**, ever: names,
  ids, states, times, counts, the error and its traceback (the supervisor's
  own frames already trimmed). Output is bounded (``max_rows`` per table,
  ``max_failures``, tracebacks cut to their last ``traceback_chars``).
* **All text is escaped twice over.** The page renders data with DOM text
  nodes only (never ``innerHTML``) under a Content-Security-Policy that
  allows no inline script; control characters and bidirectional overrides
  are sent as visible ``\\x1b``-style escapes, so a hostile task name or
  error message shows as the literal text it is.
* **Read-only unless you say otherwise.** The cancel route exists only when
  ``authorize`` is given; it is asked on every request. It takes a JSON
  body (``Content-Type: application/json``), which a cross-site HTML form
  cannot send, and refuses requests whose ``Origin`` is another site: a
  forged form post cannot cancel anything (CSRF).
"""

from __future__ import annotations

import html
import inspect
import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import attrs

from . import _validate as v
from . import _web_http as http
from ._lifespan import ASGIApp, Receive, Scope, Send
from ._registry import current_supervisor
from ._supervisor import Supervisor
from ._task import BackgroundTask, TaskState
from ._web_facts import MAX_NAME, format_traceback, safe_text, task_facts
from .exceptions import SupervisorError

__all__ = ["Authorize", "app"]

#: ``authorize(scope)``: True to allow the request to cancel a task.
Authorize = Callable[[Scope], "bool | Awaitable[bool]"]

_CANCEL_ROUTE = re.compile(r"/api/tasks/(?P<task_id>[^/]+)/cancel")


def _read_asset(name: str) -> bytes:
    return resources.files("supervisor").joinpath("_webpage", name).read_bytes()


def _check_supervisor(instance: Any, attribute: Any, value: Any) -> None:
    if value is not None and not isinstance(value, Supervisor):
        raise TypeError(
            f"supervisor.web.app(supervisor=...) takes a Supervisor or None (the "
            f"supervisor bound to each request), got {value!r} "
            f"({type(value).__name__})"
        )


@attrs.frozen
class _PageOptions:
    """The checked arguments of :func:`app` (validated by the house kit)."""

    supervisor: Supervisor | None = attrs.field(validator=_check_supervisor)
    authorize: Authorize | None = attrs.field(
        validator=v.callable_or_none("taking the request's ASGI scope")
    )
    poll_interval: float = attrs.field(
        validator=[v.seconds(zero_ok=False, finite=True), v.at_least(0.1)]
    )
    title: str = attrs.field(validator=v.non_empty_str)
    max_rows: int = attrs.field(validator=v.count(minimum=1, meaning="rows"))
    max_failures: int = attrs.field(validator=v.count(minimum=1, meaning="failures"))
    traceback_chars: int = attrs.field(
        validator=v.count(minimum=100, meaning="characters")
    )


v.CALL_NAMES[_PageOptions] = "supervisor.web.app"


def app(
    supervisor: Supervisor | None = None,
    *,
    authorize: Authorize | None = None,
    poll_interval: float = 1.0,
    title: str = "Background tasks",
    max_rows: int = 100,
    max_failures: int = 20,
    traceback_chars: int = 8000,
) -> ASGIApp:
    """The live task page, as an ASGI app to mount (``app.mount("/tasks", ...)``).

    :param supervisor: the supervisor to show. None (the default) resolves it
        on each request with :func:`~supervisor.current_supervisor`, which
        finds the supervisor an integration bound to the request (or the
        only one running), so the page follows an app whose supervisor is
        made afresh for each lifespan. Without one the JSON endpoint answers
        ``503`` with the reason, and the page shows it.
    :param authorize: ``authorize(scope) -> bool`` (or an async function):
        whether this request may cancel tasks. Without it the page is
        read-only and the cancel route does not exist (``404``). It is
        called for every cancel request, and for every poll to decide
        whether the page shows cancel buttons; anything but True refuses.
    :param poll_interval: seconds between the page's refreshes (at least 0.1).
    :param title: the page's heading.
    :param max_rows: at most this many running, pending and service rows
        each (the counts in the statistics stay exact).
    :param max_failures: at most this many recent failures, newest first,
        out of the finished tasks the supervisor still keeps (``history``).
    :param traceback_chars: each traceback is cut to its last this many
        characters (the end says where it failed).
    """
    options = _PageOptions(
        supervisor,
        authorize,
        poll_interval,
        title,
        max_rows,
        max_failures,
        traceback_chars,
    )
    return _TaskPage(options)


@attrs.define(eq=False, repr=False)
class _TaskPage:
    """The ASGI app :func:`app` returns; stateless but for a traceback cache."""

    options: _PageOptions
    _page: bytes = attrs.field(init=False)
    _assets: dict[str, tuple[bytes, bytes]] = attrs.field(init=False)
    # Formatting a traceback costs more than the rest of a poll, and a
    # failure never changes: each is formatted once and kept while it is
    # among the failures shown (by task id, checked against the exception:
    # a page without supervisor= may show several supervisors in turn).
    _tracebacks: dict[str, tuple[BaseException, str]] = attrs.field(
        init=False, factory=dict
    )

    def __attrs_post_init__(self) -> None:
        page = _read_asset("page.html").decode("utf-8")
        page = page.replace("{{title}}", html.escape(self.options.title))
        page = page.replace(
            "{{poll_ms}}", str(round(self.options.poll_interval * 1000))
        )
        self._page = page.encode("utf-8")
        self._assets = {
            "/app.js": (_read_asset("page.js"), b"text/javascript; charset=utf-8"),
            "/app.css": (_read_asset("page.css"), b"text/css; charset=utf-8"),
        }

    def __repr__(self) -> str:
        sup = self.options.supervisor
        which = "current supervisor" if sup is None else f"supervisor {sup.name!r}"
        mode = "read-only" if self.options.authorize is None else "cancel allowed"
        return f"<supervisor.web app for the {which}, {mode}>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await http.serve_lifespan(receive, send)
            return
        if kind != "http":
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1000})
            return
        await self._http(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        root = scope.get("root_path", "")
        path: str = scope["path"]
        # Starlette's Mount (and newer servers' --root-path) keep the prefix
        # in "path"; ASGI apps mounted the older way get the rest only.
        route = path[len(root) :] if root and path.startswith(root) else path
        method = scope["method"]
        match = _CANCEL_ROUTE.fullmatch(route)
        if route == "":
            # Relative URLs on the page resolve against a trailing slash.
            location = f"{root}/".encode()
            await http.respond(send, 307, b"", headers=[(b"location", location)])
        elif route == "/":
            await self._get_only(scope, send, self._page, b"text/html; charset=utf-8")
        elif route in self._assets:
            body, content_type = self._assets[route]
            await self._get_only(scope, send, body, content_type)
        elif route == "/api/tasks":
            if method in ("GET", "HEAD"):
                await self._snapshot(scope, send)
            else:
                await http.error(send, 405, "use GET", allow=b"GET, HEAD")
        elif match is not None and self.options.authorize is not None:
            if method == "POST":
                await self._cancel(scope, receive, send, match["task_id"])
            else:
                await http.error(send, 405, "use POST", allow=b"POST")
        else:
            await http.error(
                send,
                404,
                f"no such page: {route!r}; the task page is at {root + '/'!r} and "
                f"its data at {root + '/api/tasks'!r}",
            )

    async def _get_only(
        self, scope: Scope, send: Send, body: bytes, content_type: bytes
    ) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            await http.error(send, 405, "use GET", allow=b"GET, HEAD")
            return
        head = scope["method"] == "HEAD"
        await http.respond(send, 200, body, content_type=content_type, head=head)

    # -- data -------------------------------------------------------------

    async def _snapshot(self, scope: Scope, send: Send) -> None:
        try:
            sup = self._supervisor()
        except SupervisorError as exc:
            await http.error(send, 503, str(exc))
            return
        can_cancel = self.options.authorize is not None and await self._allowed(scope)
        data = self._data(sup)
        data["can_cancel"] = can_cancel
        head = scope["method"] == "HEAD"
        await http.respond(send, 200, http.to_json(data), head=head)

    def _supervisor(self) -> Supervisor:
        sup = self.options.supervisor
        return current_supervisor() if sup is None else sup

    def _data(self, sup: Supervisor) -> dict[str, Any]:
        """What the page shows, JSON-ready: no task argument, result or kwarg."""
        tasks = list(sup.tasks.values())
        limit = self.options.max_rows
        running = [t for t in tasks if t.state is TaskState.RUNNING]
        pending = [t for t in tasks if t.state is TaskState.PENDING]
        failed = [t for t in tasks if t.state is TaskState.FAILED]
        failed.sort(key=lambda t: t.completed_at or t.created_at, reverse=True)
        services = sup.services
        phase = "running" if sup.running else ("closed" if sup.closed else "stopped")
        return {
            "supervisor": {"name": safe_text(sup.name, MAX_NAME), "state": phase},
            "generated_at": datetime.now(UTC).isoformat(),
            "stats": sup.stats().as_dict(),
            "running": [task_facts(t) for t in running[:limit]],
            "pending": [task_facts(t) for t in pending[:limit]],
            "services": [
                {
                    **task_facts(s.task),
                    "restart": s.restart,
                    "restarts": s.restarts,
                }
                for s in services[:limit]
            ],
            "failures": self._failures(failed[: self.options.max_failures]),
            "truncated": {
                "running": max(0, len(running) - limit),
                "pending": max(0, len(pending) - limit),
                "services": max(0, len(services) - limit),
                "failures": max(0, len(failed) - self.options.max_failures),
            },
        }

    def _failures(self, failed: list[BackgroundTask[Any]]) -> list[dict[str, Any]]:
        cache, self._tracebacks = self._tracebacks, {}
        shown = []
        for task in failed:
            error = task.error
            assert error is not None  # a FAILED record holds its exception
            cached = cache.get(task.task_id)
            if cached is not None and cached[0] is error:
                text = cached[1]
            else:
                text = format_traceback(error)
            self._tracebacks[task.task_id] = (error, text)
            shown.append({**task_facts(task), "traceback": self._cut(text)})
        return shown

    def _cut(self, text: str) -> str | None:
        limit = self.options.traceback_chars
        if len(text) > limit:
            text = f"[{len(text) - limit} characters cut]\n…{text[-limit:]}"
        return safe_text(text, None)

    # -- cancelling ---------------------------------------------------------

    async def _allowed(self, scope: Scope) -> bool:
        authorize = self.options.authorize
        assert authorize is not None
        verdict = authorize(scope)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        if not isinstance(verdict, bool):
            raise TypeError(
                f"supervisor.web.app(authorize=...) must return True or False (or "
                f"an awaitable of one), got {verdict!r} from {authorize!r}"
            )
        return verdict

    async def _cancel(
        self, scope: Scope, receive: Receive, send: Send, task_id: str
    ) -> None:
        refusal = await self._refusal(scope, receive)
        if refusal is not None:
            await http.error(send, *refusal)
            return
        try:
            sup = self._supervisor()
        except SupervisorError as exc:
            await http.error(send, 503, str(exc))
            return
        task = sup.get(task_id)
        if task is None:
            await http.error(send, 404, f"no task with id {task_id!r}")
            return
        cancelled = task.cancel("cancelled from the task page")
        reply = {"task_id": task.task_id, "cancelled": cancelled}
        await http.respond(
            send, 200, http.to_json({**reply, "state": task.state.value})
        )

    async def _refusal(self, scope: Scope, receive: Receive) -> tuple[int, str] | None:
        """Why a cancel request is refused (status, message), or None to go on.

        A JSON body is required because a cross-site HTML form can only send
        form or text bodies; the Origin and Fetch-metadata checks refuse what
        a cross-site script could still send (CSRF).
        """
        headers = http.headers_of(scope)
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return (
                415,
                "send the cancel request with Content-Type: application/json "
                "(a cross-site form cannot)",
            )
        if not http.same_origin(headers):
            return 403, (
                "cross-site request refused: cancel from the task page itself "
                "(same origin)"
            )
        if not await self._allowed(scope):
            return 403, (
                "not allowed to cancel tasks: the app's authorize() callable "
                "refused this request"
            )
        body = await http.read_body(receive, limit=4096)
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return 400, "the body must be a JSON object, e.g. {}"
        return None
