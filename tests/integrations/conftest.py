"""Helpers for the integration tests: real servers on 127.0.0.1, JSON logs.

``serve(...)`` starts an example (or any app module in ``examples/``) under a
real server process on a free port, waits for ``GET /health`` with a bounded
loop, and always stops the process at the end of the test (SIGTERM, then
SIGKILL if it outlives its bound). The app writes JSON lines to the file
named by ``EXAMPLE_LOG_FILE``; :meth:`Server.records` reads them after exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TERMINAL_EVENTS = ("task:succeeded", "task:failed", "task:cancelled")
#: Seconds a server may take past the supervisor's shutdown timeout to exit:
#: the 0.5 s cancel grace, the server's own teardown and interpreter exit.
EXIT_BOUND = 3.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def uvicorn_command(app: str, port: int, app_dir: Path = EXAMPLES) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", app,
        "--host", "127.0.0.1", "--port", str(port),
        "--app-dir", str(app_dir), "--lifespan", "on",
    ]  # fmt: skip


def hypercorn_command(app: str, port: int, worker_class: str) -> list[str]:
    return [
        sys.executable, "-m", "hypercorn", app,
        "--worker-class", worker_class, "--bind", f"127.0.0.1:{port}",
    ]  # fmt: skip


#: The test-only apps (``apps/*.py``); tests serve them with ``PYTHONPATH``
#: set to it, so that hypercorn (which has no ``--app-dir``) finds them too.
APPS = Path(__file__).resolve().parent / "apps"

Command = Callable[[int], list[str]]


def app_servers(app: str) -> tuple[Command, Command]:
    """Commands serving ``apps/<app>`` under uvicorn (asyncio) and hypercorn (trio)."""

    def uvicorn(port: int) -> list[str]:
        return uvicorn_command(app, port, APPS)

    def hypercorn_trio(port: int) -> list[str]:
        return [*hypercorn_command(app, port, "trio"), "--graceful-timeout", "1"]

    return uvicorn, hypercorn_trio


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the server and the workers it spawned (its process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


@attrs.define
class Server:
    """A server process running one example app."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    output_path: Path
    exit_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        """What the server printed (stdout and stderr)."""
        return self.output_path.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll ``GET /health`` until it answers 200; fail with the output otherwise."""
        import httpx

        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.05) + 1):  # bounded; the deadline decides
            if self.proc.poll() is not None:
                pytest.fail(
                    f"server exited with {self.proc.returncode} before it was ready:\n"
                    f"{self.output()}"
                )
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        pytest.fail(f"server not ready after {timeout} s:\n{self.output()}")

    def terminate(self, timeout: float) -> float:
        """SIGTERM, wait up to ``timeout`` s; return the seconds it took to exit."""
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(self.proc)
            pytest.fail(
                f"server still running {timeout} s after SIGTERM; killed it:\n"
                f"{self.output()}"
            )
        self.exit_seconds = time.monotonic() - began
        return self.exit_seconds

    def records(self) -> list[dict[str, Any]]:
        """Every JSON line the app logged; a line that is not JSON fails the test."""
        records = []
        for number, line in enumerate(
            self.log_path.read_text(encoding="utf-8").splitlines(), 1
        ):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                pytest.fail(f"{self.log_path}:{number} is not JSON: {line!r}")
        return records


def outcomes(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Terminal log lines by task id."""
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record.get("event") in TERMINAL_EVENTS:
            by_id[record["task_id"]].append(record)
    return dict(by_id)


def events(records: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [r for r in records if r.get("event") == name]


ServeFactory = Callable[..., Server]


@pytest.fixture(
    params=[pytest.param("asyncio", id="asyncio"), pytest.param("trio", id="trio")]
)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Plain backend names here: TestClient and servers take a name, not options.

    The eager-task-factory variant of the core tests needs a loop factory,
    which Starlette's TestClient and the server processes cannot be given.
    """
    return str(request.param)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServeFactory]:
    """Start servers; every one still running at teardown is stopped."""
    started: list[Server] = []

    def start(
        command: Callable[[int], list[str]],
        *,
        shutdown_timeout: float = 1.0,
        env: dict[str, str] | None = None,
    ) -> Server:
        port = free_port()
        name = f"server-{len(started)}"
        log_path = tmp_path / f"{name}.jsonl"
        output_path = tmp_path / f"{name}.out"
        full_env = {
            **os.environ,
            "EXAMPLE_LOG_FILE": str(log_path),
            "EXAMPLE_SHUTDOWN_TIMEOUT": str(shutdown_timeout),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        with output_path.open("wb") as output:
            proc = subprocess.Popen(
                command(port),
                cwd=EXAMPLES,
                env=full_env,
                stdout=output,
                stderr=subprocess.STDOUT,
                # Its own process group, so that a server that spawns workers
                # (hypercorn) can be killed whole if SIGTERM is not enough.
                start_new_session=True,
            )
        server = Server(proc, port, log_path, output_path)
        started.append(server)
        server.wait_ready()
        return server

    yield start

    for server in started:
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)
            try:
                server.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                kill_group(server.proc)


# -- in-process ASGI driving ---------------------------------------------------


class LifespanDriver:
    """Plays the server's side of one ASGI lifespan, in process, on any backend.

    Use through :func:`drive_lifespan`. The app runs in a task of its own (as
    under a server); :meth:`startup` and :meth:`shutdown` send the server's
    message and return the app's reply; the app's exception, if any, lands in
    :attr:`error` instead of the test's task group.
    """

    def __init__(self, app: Any, *, state: dict[str, Any] | None) -> None:
        import anyio

        self.app = app
        self.scope: dict[str, Any] = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
        }
        if state is not None:
            self.scope["state"] = state
        self._to_app, self._app_inbox = anyio.create_memory_object_stream[Any](8)
        self._app_outbox, self._from_app = anyio.create_memory_object_stream[Any](8)
        self.sent: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.done = anyio.Event()

    async def _send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        await self._app_outbox.send(message)

    async def run(self) -> None:
        import anyio

        try:
            await self.app(self.scope, self._app_inbox.receive, self._send)
        except anyio.get_cancelled_exc_class():
            raise
        except BaseException as exc:  # recorded for the test to inspect
            self.error = exc
        finally:
            self.done.set()

    async def _reply(self) -> dict[str, Any]:
        import anyio

        with anyio.fail_after(10):
            message: dict[str, Any] = await self._from_app.receive()
        return message

    async def startup(self) -> dict[str, Any]:
        await self._to_app.send({"type": "lifespan.startup"})
        return await self._reply()

    async def shutdown(self) -> dict[str, Any]:
        await self._to_app.send({"type": "lifespan.shutdown"})
        return await self._reply()

    async def finished(self) -> None:
        import anyio

        with anyio.fail_after(10):
            await self.done.wait()

    def close(self) -> None:
        for stream in (self._to_app, self._app_inbox, self._app_outbox, self._from_app):
            stream.close()


@contextlib.asynccontextmanager
async def drive_lifespan(
    app: Any, *, with_state: bool = True
) -> AsyncIterator[LifespanDriver]:
    """Run ``app``'s lifespan in a task; the block plays the server.

    ``with_state=False`` plays a server without lifespan state support.
    """
    import anyio

    driver = LifespanDriver(app, state={} if with_state else None)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(driver.run)
            yield driver
            await driver.finished()
    finally:
        driver.close()


async def call_http(
    app: Any, path: str = "/", *, state: dict[str, Any] | None = None
) -> tuple[int, bytes]:
    """One in-process GET through ``app``; returns (status, body)."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }
    if state is not None:
        scope["state"] = state
    status = 0
    body = b""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, body
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body += message.get("body", b"")

    await app(scope, receive, send)
    return status, body


def starlette_testclient() -> Any:
    """Starlette's ``TestClient`` class, imported without its httpx warning.

    Starlette 1.x warns (StarletteDeprecationWarning, a UserWarning) once, at
    import, when its test client runs on ``httpx`` rather than ``httpx2``;
    with ``filterwarnings = error`` that import would fail. The project's test
    dependencies pin httpx, so the warning is silenced here, for that import only.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"Using `httpx` with `starlette.testclient` is deprecated"
        )
        from starlette.testclient import TestClient
    return TestClient
