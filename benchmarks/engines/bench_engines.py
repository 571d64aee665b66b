"""Measure Redis-backed task engines: throughput, kill -9 redelivery, trio.

Nothing is installed here. Make a scratch venv with the engines, then run
this from the repository root (``redis-server`` must be on PATH; the script
starts its own on a free loopback port, without persistence, and stops it)::

    python3 -m venv /tmp/engines-venv
    /tmp/engines-venv/bin/pip install taskiq taskiq-redis saq arq streaq trio -e .
    /tmp/engines-venv/bin/python benchmarks/engines/bench_engines.py [--tuned]
        [--engines taskiq,saq,arq,streaq,nursery] [-n 1000]

For each engine, one producer (this process) enqueues ``-n`` trivial tasks
one after another while one worker process (the engine's own command) runs
them; ``enqueue`` is the producer's time, ``total`` the time until the last
task has run. Then the kill test: one 3-second task starts, the worker gets
SIGKILL, a fresh worker starts, and we wait (up to ``--kill-wait`` s) for the
task to run again: "redelivered after X s" or "lost". ``--tuned`` shortens
each engine's crash-recovery timeouts where it has a knob (see the engine
modules). ``nursery`` is our adapter, :mod:`supervisor.durable`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def redis_server() -> Any:
    port = free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=0.2),
            ):
                break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def flush(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushall()


def lines(marks: Path) -> list[str]:
    try:
        return marks.read_text().splitlines()
    except FileNotFoundError:
        return []


def count(marks: Path, kind: str = "done") -> int:
    return sum(1 for line in lines(marks) if line.startswith(kind + " "))


def start_worker(
    engine: str, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    mod = importlib.import_module(f"eng_{engine}")
    argv = list(mod.WORKER)
    argv[0] = str(Path(sys.executable).with_name(argv[0]))
    return subprocess.Popen(
        argv,
        cwd=HERE,
        env=env,
        start_new_session=True,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def stop_worker(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def wait_for(pred: Any, timeout: float) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if pred():
            return time.monotonic() - start
        time.sleep(0.01)
    return None


async def produce(engine: str, func: str, tokens: list[str]) -> float:
    mod = importlib.import_module(f"eng_{engine}")
    async with mod.Producer() as producer:
        start = time.perf_counter()
        for token in tokens:
            await producer.send(func, token)
        return time.perf_counter() - start


def run_engine(
    engine: str, url: str, n: int, kill_wait: float, tuned: bool
) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{engine}-"))
    marks = tmp / "marks"
    env = {
        **os.environ,
        "BENCH_REDIS_URL": url,
        "BENCH_MARKS": str(marks),
        "BENCH_TUNED": "1" if tuned else "0",
        "PYTHONPATH": str(HERE),
    }
    os.environ.update(env)
    out: dict[str, Any] = {"engine": engine}
    flush(url)
    log = tmp / "worker.log"
    worker = start_worker(engine, env, log)
    try:
        # Warm-up: one task through, so the worker is surely consuming.
        asyncio.run(produce(engine, "noop", ["warm"]))
        if wait_for(lambda: count(marks) >= 1, 60) is None:
            out["error"] = f"worker never ran the warm-up task; see {log}"
            return out
        marks.unlink()
        start = time.perf_counter()
        enqueue = asyncio.run(produce(engine, "noop", [str(i) for i in range(n)]))
        done = wait_for(lambda: count(marks) >= n, 120)
        total = time.perf_counter() - start
        out.update(
            enqueue_s=round(enqueue, 3),
            total_s=round(total, 3),
            completed=count(marks),
            tasks_per_s=round(n / total) if done else None,
        )
        marks.unlink(missing_ok=True)
        # Kill test.
        asyncio.run(produce(engine, "slow", ["victim"]))
        if wait_for(lambda: count(marks, "start") >= 1, 30) is None:
            out["kill"] = "slow task never started"
            return out
        stop_worker(worker, signal.SIGKILL)
        killed_at = time.monotonic()
        worker = start_worker(engine, env, log)
        again = wait_for(lambda: count(marks, "done") >= 1, kill_wait)
        starts = count(marks, "start")
        if again is None:
            out["kill"] = f"lost (not run again within {kill_wait:.0f} s)"
        else:
            out["kill"] = (
                f"redelivered: done {time.monotonic() - killed_at:.1f} s "
                f"after the kill ({starts} starts)"
            )
    finally:
        stop_worker(worker)
    return out


def trio_producer(engine: str, url: str) -> str:
    """Can the engine's own producer enqueue from a trio program?"""
    code = (
        f"import sys, trio; sys.path.insert(0, {str(HERE)!r})\n"
        f"import eng_{engine} as m\n"
        "async def main():\n"
        "    async with m.Producer() as p:\n"
        "        await p.send('noop', 'trio')\n"
        "trio.run(main)\n"
    )
    env = {**os.environ, "BENCH_REDIS_URL": url, "BENCH_MARKS": os.devnull}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode == 0:
        return "works"
    last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "?"
    return f"fails: {last[:100]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="taskiq,saq,arq,streaq")
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--kill-wait", type=float, default=90.0)
    parser.add_argument("--tuned", action="store_true")
    args = parser.parse_args()
    with redis_server() as url:
        for engine in args.engines.split(","):
            result = run_engine(engine, url, args.n, args.kill_wait, args.tuned)
            result["trio_producer"] = trio_producer(engine, url)
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
