"""Requests/s and p99 latency of an endpoint spawning one background task per request.

    python benchmarks/bench_http.py [--rounds 8] [--duration 3] [--connections 32]
                                    [--quick] [--loadgen wrk|httpx]

Each contender is the same tiny app under uvicorn (asyncio, h11, one worker,
access log off) on 127.0.0.1, whose ``GET /spawn`` starts one trivial task
(``await asyncio.sleep(0)``) and answers ``ok``:

* ``supervisor``: a Starlette app whose lifespan runs ``async with
  Supervisor(...)``; the handler calls ``sup.spawn_nowait(trivial)``;
* ``anyio``: the same app, spawning with ``tg.start_soon(trivial)`` into an
  anyio task group opened in the lifespan (the raw spawn: the target is
  >= 95% of its requests/s);
* ``create-task``: the same app, the asyncio docs' fire-and-forget pattern
  (``asyncio.create_task`` plus a set holding a reference until done): the
  floor for spawning a task per request on asyncio;
* ``starlette-bg``: the same app, ``PlainTextResponse(..., background=
  BackgroundTask(trivial))``, which runs the task inside the request after
  the response;
* ``fastapi-bg``: a FastAPI app with a ``BackgroundTasks`` parameter (the
  same mechanism, plus FastAPI's routing and dependency resolution);
* ``none``: the Starlette endpoint without any task, the ceiling.

All servers start once; then the load generator (``wrk`` with one thread
when it is installed, else a bounded httpx client) hits them in turn, round
by round, so drift hits each alike. On a 2-core machine the server and
``wrk`` get one core each (CPU affinity). After the runs, each server
reports how many tasks ran against how many requests it handled, so a
contender that drops work cannot look fast. The supervisor logs through a
production-like structlog configuration (JSON, filtered at WARNING).

The app itself is built by :func:`make_app` in the server process (uvicorn
``--factory``), which reads the contender from ``BENCH_HTTP_CONTENDER``.
"""

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
from _common import (
    configure_production_logging,
    fmt_num,
    fmt_ratio,
    free_port,
    markdown_table,
    median,
    verdict,
)

HERE = Path(__file__).resolve().parent
ENV_CONTENDER = "BENCH_HTTP_CONTENDER"
#: Written to stderr when the app's lifespan has shut down: proves a clean stop.
SHUTDOWN_MARK = "bench_http: lifespan shutdown complete"

#: key -> label, in the order the rounds visit them.
CONTENDERS = {
    "supervisor": "Supervisor.spawn_nowait (Starlette)",
    "anyio": "anyio tg.start_soon (Starlette)",
    "create-task": "asyncio.create_task + set (Starlette)",
    "starlette-bg": "Starlette BackgroundTask",
    "fastapi-bg": "FastAPI BackgroundTasks",
    "none": "no task (Starlette, ceiling)",
}
REFERENCE = "anyio"
TARGET_RATIO = 0.95


# -- the server side -----------------------------------------------------------

_counts = {"requests": 0, "ran": 0}


async def trivial() -> None:
    """The background task: one checkpoint, counted so dropped work shows."""
    await asyncio.sleep(0)
    _counts["ran"] += 1


def make_app() -> Any:
    """The ASGI app for ``$BENCH_HTTP_CONTENDER`` (run by uvicorn ``--factory``)."""
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    kind = os.environ[ENV_CONTENDER]
    configure_production_logging()
    counts = _counts

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse({"contender": kind, **counts})

    holder: dict[str, Callable[..., Any]] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        if kind == "supervisor":
            from supervisor import Supervisor

            async with Supervisor(name="bench-http") as sup:
                holder["spawn"] = sup.spawn_nowait
                yield
        elif kind == "anyio":
            async with anyio.create_task_group() as tg:
                holder["spawn"] = tg.start_soon
                yield
                tg.cancel_scope.cancel()
        elif kind == "create-task":
            # The asyncio docs' fire-and-forget pattern: a strong reference
            # until done, nothing else (no errors logged, no shutdown).
            running: set[asyncio.Task[None]] = set()

            def create_task(func: Callable[[], Any]) -> None:
                task = asyncio.create_task(func())
                running.add(task)
                task.add_done_callback(running.discard)

            holder["spawn"] = create_task
            yield
        else:
            yield
        print(SHUTDOWN_MARK, file=sys.stderr, flush=True)

    if kind == "fastapi-bg":
        from fastapi import BackgroundTasks, FastAPI

        api = FastAPI(lifespan=lifespan)

        @api.get("/spawn")
        async def fastapi_spawn(background_tasks: BackgroundTasks) -> PlainTextResponse:
            counts["requests"] += 1
            background_tasks.add_task(trivial)
            return PlainTextResponse("ok")

        api.add_route("/stats", stats)
        return api

    async def spawn(request: Request) -> PlainTextResponse:
        counts["requests"] += 1
        holder["spawn"](trivial)
        return PlainTextResponse("ok")

    async def starlette_bg(request: Request) -> PlainTextResponse:
        counts["requests"] += 1
        return PlainTextResponse("ok", background=BackgroundTask(trivial))

    async def no_task(request: Request) -> PlainTextResponse:
        counts["requests"] += 1
        counts["ran"] += 1  # nothing to run: count it as done
        return PlainTextResponse("ok")

    endpoints = {"starlette-bg": starlette_bg, "none": no_task}
    endpoint = endpoints.get(kind, spawn)
    return Starlette(
        routes=[Route("/spawn", endpoint), Route("/stats", stats)], lifespan=lifespan
    )


# -- the client side -------------------------------------------------------------


@dataclass
class Server:
    """One uvicorn process serving one contender."""

    key: str
    port: int
    process: subprocess.Popen[bytes]
    stderr_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server so far (Linux ``/proc``; else NaN).

        CPU per request is steadier than requests/s on a shared machine: it
        does not count the time the server waited for the CPU.
        """
        try:
            fields = (
                Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1]
            )
        except OSError:
            return float("nan")
        utime, stime = fields.split()[11:13]
        return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")


def _pin(pid: int, cpu: int) -> None:
    """Give the server and the load generator a core each, where that is possible."""
    if (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, {cpu})


def start_server(key: str, logdir: Path) -> Server:
    port = free_port()
    stderr_path = logdir / f"uvicorn-{key}.log"
    command = [
        *(sys.executable, "-m", "uvicorn", "--factory", "bench_http:make_app"),
        *("--app-dir", str(HERE), "--host", "127.0.0.1", "--port", str(port)),
        *("--loop", "asyncio", "--http", "h11", "--lifespan", "on"),
        *("--log-level", "warning", "--no-access-log"),
    ]
    env = {**os.environ, ENV_CONTENDER: key}
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )
    _pin(process.pid, 0)
    return Server(key, port, process, stderr_path)


def wait_ready(server: Server, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"uvicorn for {server.key!r} exited with {server.process.returncode}; "
                f"see {server.stderr_path}:\n{server.stderr_path.read_text()[-2000:]}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.url + "/stats", timeout=1.0).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"uvicorn for {server.key!r} not ready after {timeout} s")


def stop_server(server: Server) -> str:
    """SIGTERM (a graceful lifespan shutdown), then SIGKILL if it hangs.

    Returns ``"clean"`` when the app's lifespan finished and uvicorn exited
    normally (recent uvicorn re-raises the SIGTERM it handled, hence -15),
    else what went wrong.
    """
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=5)
            return "killed (hung)"
    code = server.process.returncode
    log = server.stderr_path.read_text(errors="replace")
    if code not in (0, -signal.SIGTERM):
        return f"exit {code}"
    if SHUTDOWN_MARK not in log:
        return "no lifespan shutdown"
    if "Traceback" in log or "ERROR" in log:
        return "errors in log"
    return "clean"


@dataclass
class Load:
    rps: float
    p99_ms: float
    requests: int
    errors: int


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _wrk_latency_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"cannot read a wrk latency from {text!r}")
    return float(match[1]) * _UNITS_MS[match[2]]


def run_wrk(url: str, duration: float, connections: int) -> Load:
    command = [
        *("wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s"),
        *("--latency", "--timeout", "5s", url),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _pin(process.pid, 1)
    out, err = process.communicate(timeout=duration + 30)
    text = out.decode()
    if process.returncode != 0:
        raise RuntimeError(f"wrk failed ({process.returncode}): {err.decode()}{text}")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.MULTILINE)
    total = re.search(r"(\d+) requests in", text)
    if rps is None or p99 is None or total is None:
        raise RuntimeError(f"cannot parse wrk's output:\n{text}")
    errors = 0
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if non_2xx:
        errors += int(non_2xx[1])
    return Load(float(rps[1]), _wrk_latency_ms(p99[1]), int(total[1]), errors)


async def _httpx_load(url: str, duration: float, connections: int) -> Load:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(
        max_connections=connections, max_keepalive_connections=connections
    )
    async with httpx.AsyncClient(limits=limits, timeout=5.0) as client:
        deadline = time.perf_counter() + duration

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    response = await client.get(url)
                except httpx.HTTPError:
                    errors += 1
                    continue
                if response.status_code != 200:
                    errors += 1
                latencies.append(time.perf_counter() - t0)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    p99 = (
        latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        if latencies
        else 0
    )
    return Load(len(latencies) / elapsed, p99 * 1000, len(latencies), errors)


def run_httpx(url: str, duration: float, connections: int) -> Load:
    """The fallback load generator: Python, so it saturates long before the server."""
    _pin(os.getpid(), 1)
    return asyncio.run(_httpx_load(url, duration, connections))


@dataclass
class Samples:
    rps: dict[str, list[float]] = field(default_factory=dict)
    cpu_us: dict[str, list[float]] = field(default_factory=dict)
    p99: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)


def report(
    samples: Samples, final: dict[str, dict[str, Any]], stops: dict[str, str]
) -> str:
    ref = median(samples.rps.get(REFERENCE, []))
    rows = []
    for key, label in CONTENDERS.items():
        if key not in samples.rps:
            continue
        rps = median(samples.rps[key])
        counts = final.get(key, {})
        handled, ran = counts.get("requests", 0), counts.get("ran", 0)
        rows.append(
            [
                label,
                fmt_num(rps),
                fmt_ratio(rps, ref),
                fmt_num(median(samples.p99[key]), 2),
                fmt_num(median(samples.cpu_us[key])),
                f"{ran:,}/{handled:,}",
                str(samples.errors.get(key, 0)),
                stops.get(key, "?"),
            ]
        )
    headers = [
        "contender",
        "requests/s",
        "vs anyio",
        "p99 ms",
        "server CPU µs/req",
        "tasks run/requests",
        "errors",
        "shutdown",
    ]
    return markdown_table(headers, rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, help="rounds (default 8)")
    parser.add_argument("--duration", type=float, help="seconds per run (default 3)")
    parser.add_argument("--connections", type=int, default=32, help="concurrency")
    parser.add_argument(
        "--loadgen",
        choices=["wrk", "httpx"],
        help="default: wrk if installed, else httpx",
    )
    parser.add_argument(
        "--contenders", nargs="+", choices=list(CONTENDERS), default=list(CONTENDERS)
    )
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 s")
    args = parser.parse_args(argv)
    # Many short rounds rather than a few long ones: on a shared machine the
    # noise comes in bursts, and alternating often spreads it over everyone.
    if args.rounds is None:
        args.rounds = 2 if args.quick else 8
    if args.duration is None:
        args.duration = 2.0 if args.quick else 3.0
    if args.loadgen is None:
        args.loadgen = "wrk" if shutil.which("wrk") else "httpx"
    if REFERENCE not in args.contenders:
        args.contenders.insert(0, REFERENCE)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    load: Callable[[str, float, int], Load] = (
        run_wrk if args.loadgen == "wrk" else run_httpx
    )
    began = time.perf_counter()
    samples = Samples()
    final: dict[str, dict[str, Any]] = {}
    stops: dict[str, str] = {}
    logdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_http-{os.getpid()}"
    logdir.mkdir(parents=True, exist_ok=True)
    keys = [k for k in CONTENDERS if k in args.contenders]
    servers: list[Server] = []
    try:
        for key in keys:
            servers.append(start_server(key, logdir))
        for server in servers:
            wait_ready(server)
            load(server.url + "/spawn", 1.0, args.connections)  # warm-up, discarded
        for r in range(args.rounds):
            for server in servers:
                cpu0 = server.cpu_seconds()
                result = load(server.url + "/spawn", args.duration, args.connections)
                cpu = (server.cpu_seconds() - cpu0) / max(1, result.requests) * 1e6
                samples.cpu_us.setdefault(server.key, []).append(cpu)
                samples.rps.setdefault(server.key, []).append(result.rps)
                samples.p99.setdefault(server.key, []).append(result.p99_ms)
                samples.errors[server.key] = (
                    samples.errors.get(server.key, 0) + result.errors
                )
            print(f"  round {r + 1}/{args.rounds} done", file=sys.stderr)
        time.sleep(0.5)  # let FastAPI/Starlette background tasks finish
        for server in servers:
            final[server.key] = httpx.get(server.url + "/stats", timeout=5).json()
    finally:
        for server in servers:
            stops[server.key] = stop_server(server)

    print("# HTTP benchmark: one background task per request\n")
    print(
        f"uvicorn (asyncio, h11, 1 worker) on 127.0.0.1; load: {args.loadgen}, "
        f"{args.connections} connections, {args.duration:g} s per run; medians over "
        f"{args.rounds} rounds, contenders alternating; server and load generator "
        "pinned to one core each. `tasks run/requests` counts every request "
        "(warm-up included) and the tasks that ran; `server CPU µs/req` is the "
        "server process's CPU time over the run divided by the requests wrk "
        "completed (steadier than requests/s on a shared machine); `shutdown` says "
        "whether SIGTERM "
        f"ended the lifespan cleanly. Server logs: {logdir}\n"
    )
    print(report(samples, final, stops))
    print()
    if args.loadgen == "httpx":
        print(
            "NOTE: the httpx load generator is far slower than the server, so these "
            "figures measure the client more than the contenders; install wrk "
            "(e.g. `apt-get install wrk`) for meaningful numbers.\n"
        )
    sup, ref = median(samples.rps.get("supervisor", [])), median(samples.rps[REFERENCE])
    ok = None if "supervisor" not in samples.rps else sup >= TARGET_RATIO * ref
    print(
        f"target: Supervisor requests/s >= {TARGET_RATIO:.0%} of raw anyio spawn: "
        f"{verdict(ok)} ({fmt_ratio(sup, ref)})"
    )
    lost = [
        k
        for k, c in final.items()
        if c.get("ran") != c.get("requests") or samples.errors.get(k)
    ]
    if lost:
        print(f"WARNING: tasks missing or request errors for: {', '.join(lost)}")
    print(f"\n(total {time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
