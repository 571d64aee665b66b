"""The demo: a real app under a real server, background tasks, a clean shutdown.

Run it with ``./dev demo`` (which installs what it needs), or directly, in an
environment that has this package, uvicorn and qakeapi::

    python examples/demo.py

What it does, in well under a minute:

1. starts ``examples/qakeapi_app.py`` (QakeAPI's own background-task
   examples, running on a supervisor) under uvicorn on a free port on
   127.0.0.1, writing JSON log lines to a temporary file;
2. sends it requests that spawn background tasks: a welcome email, a report
   generated in a worker thread (twice, once from a sync handler), an order,
   a task that fails, a result waited for, and a watcher that runs forever;
3. stops the server with SIGTERM, as a process manager would: the
   supervisor drains the tasks still running for ``shutdown_timeout``
   seconds, then cancels what is left;
4. reads the JSON log and prints what happened to every task, then the
   failure summary from ``python -m supervisor failures``.

It exits with status 0 when every task spawned by a request ended exactly
once in the log, 1 otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SHUTDOWN_TIMEOUT = 2.0
TERMINAL = {"task:succeeded", "task:failed", "task:cancelled"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def call(
    base: str, method: str, path: str, body: Any = None, request_id: str = ""
) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{base}{path}", data=data, method=method)
    request.add_header("content-type", "application/json")
    if request_id:
        request.add_header("x-request-id", request_id)
    with urllib.request.urlopen(request, timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def wait_ready(base: str, server: subprocess.Popen[bytes], output: Path) -> None:
    deadline = time.monotonic() + 20
    for _ in range(400):  # bounded: 20 s at most
        if server.poll() is not None:
            sys.exit(f"the server exited early:\n{output.read_text()}")
        try:
            call(base, "GET", "/health")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        else:
            return
    server.kill()
    sys.exit(f"the server did not become ready:\n{output.read_text()}")


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def send_requests(base: str) -> dict[str, str]:
    """Requests that spawn tasks; returns task id -> request id."""
    spawned: dict[str, str] = {}
    plan: list[tuple[str, str, Any, str]] = [
        ("POST", "/users", {"email": "ada@example.com"}, "welcome email"),
        ("POST", "/reports", {"rows": [3, 4, 5]}, "report, in a worker thread"),
        ("POST", "/orders", {"id": 7, "user_id": 3, "items": ["a", "b"]}, "order"),
        ("POST", "/process", {"item": 13}, "a task that fails"),
        ("POST", "/calculate", {"numbers": [1, 2, 3]}, "wait=True result"),
        ("GET", "/sync-report?rows=4", None, "sync handler, spawn_threadsafe"),
        ("POST", "/watch", None, "runs until shutdown"),
    ]
    for number, (method, path, body, what) in enumerate(plan, 1):
        request_id = f"req-{number}"
        answer = call(base, method, path, body, request_id)
        spawned[answer["task_id"]] = request_id
        extra = f"  result={answer['result']}" if "result" in answer else ""
        print(f"  {method:4} {path:22} {what:32} -> task {answer['task_id']}{extra}")
    return spawned


def read_log(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            print(f"  (not JSON: {line[:80]!r})")
    return records


def report(records: list[dict[str, Any]], spawned: dict[str, str]) -> bool:
    """Print one row per task; True when every spawned task ended exactly once."""
    ends: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record.get("event") in TERMINAL:
            ends.setdefault(record["task_id"], []).append(record)
    header = (
        f"  {'task id':12} {'name':18} {'outcome':10} {'duration':>9}  request  detail"
    )
    print(header)
    print("  " + "-" * (len(header) - 2))
    ok = True
    for task_id in list(spawned) + [t for t in ends if t not in spawned]:
        lines = ends.get(task_id, [])
        if len(lines) != 1:
            ok = False
            print(f"  {task_id:12} !! {len(lines)} terminal log lines (expected 1)")
            continue
        line = lines[0]
        duration = line.get("duration_s")
        shown = "-" if duration is None else f"{duration:.3f}s"
        detail = ""
        if line["event"] == "task:failed":
            detail = f"{line['error_type']}: {line['error']}"
        elif line["event"] == "task:cancelled":
            detail = f"reason={line.get('reason')}"
        outcome = line["event"].removeprefix("task:")
        request = line.get("request_id", "-")
        print(
            f"  {task_id:12} {line['task_name']:18} {outcome:10} {shown:>9}  "
            f"{request:7}  {detail}"
        )
    return ok


def main() -> int:
    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="supervisor-demo-"))
    log_path = workdir / "app.jsonl"
    output = workdir / "server.out"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "EXAMPLE_LOG_FILE": str(log_path),
        "EXAMPLE_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
    }
    command = [
        sys.executable, "-m", "uvicorn", "qakeapi_app:app", "--app-dir", str(HERE),
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip

    step(f"starting examples/qakeapi_app.py under uvicorn on {base}")
    with output.open("wb") as out:
        server = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_ready(base, server, output)
        step("sending requests that spawn background tasks")
        spawned = send_requests(base)
        time.sleep(0.3)  # let the short tasks finish, so the table shows both ends
        step(f"SIGTERM (shutdown_timeout={SHUTDOWN_TIMEOUT:g}s)")
        stopping = time.monotonic()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=SHUTDOWN_TIMEOUT + 15)
        print(f"  server exited after {time.monotonic() - stopping:.2f}s")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()

    records = read_log(log_path)
    step(f"what happened to every task (from {log_path})")
    accounted = report(records, spawned)
    for record in records:
        if record.get("event") == "supervisor:shutdown":
            print(
                f"\n  supervisor:shutdown  drained={record['drained']} "
                f"cancelled_at_deadline={record['cancelled_at_deadline']} "
                f"abandoned={record['abandoned']} spawned={record['spawned']} "
                f"succeeded={record['succeeded']} failed={record['failed']} "
                f"cancelled={record['cancelled']}"
            )
        elif record.get("event") == "qakeapi:shutdown_hooks_failed":
            print(
                "  note: qakeapi's own shutdown hook raised "
                f"{record['error_type']}({record['error']!r}) (a qakeapi 1.3.1 bug); "
                "the supervisor shut down cleanly after it"
            )

    step(f"python -m supervisor failures {log_path.name}")
    summary = subprocess.run(
        [sys.executable, "-m", "supervisor", "failures", str(log_path)],
        check=False,
        capture_output=True,
        text=True,
    )
    print(summary.stdout.rstrip() or summary.stderr.rstrip())

    step(
        f"done in {time.monotonic() - began:.1f}s: "
        + (
            "every task accounted for"
            if accounted
            else "SOME TASKS ARE NOT ACCOUNTED FOR"
        )
    )
    print(f"  (logs kept in {workdir})")
    return 0 if accounted else 1


if __name__ == "__main__":
    sys.exit(main())
