"""supervisor.durable against a real redis-server and real worker processes.

A session fixture starts Debian's ``redis-server`` on a free loopback port
with no persistence (the noxfile installs it when missing); without it these
tests skip, saying so. Producers run on asyncio and trio; workers are real
``python -m supervisor.durable worker`` processes writing JSON logs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from supervisor import Retry, TaskState

from .conftest import free_port, kill_group, outcomes, uvicorn_command

pytest.importorskip("redis")

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    if shutil.which("redis-server") is None:
        pytest.skip(
            "redis-server is not installed: `./dev test` installs it as root "
            "(apt-get install redis-server)"
        )
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--daemonize", "no"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        import redis

        client = redis.Redis(port=port)
        for _ in range(200):  # bounded: 10 s
            with contextlib.suppress(redis.ConnectionError):
                client.ping()
                break
            time.sleep(0.05)
        else:
            pytest.fail("redis-server did not answer PING within 10 s")
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


class Worker:
    """A worker process of ``durable_app:queue``, restartable, logging JSON."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.args: list[str] = []

    def restart(self, *args: str) -> None:
        """Stop this worker (SIGKILL) and start one with extra options."""
        self.kill()
        self.args = list(args)
        self.start()

    def start(self) -> None:
        err = self.log.with_suffix(".err").open("ab")  # closed here; the child keeps it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor.durable", "worker", "durable_app:queue",
             "--log-file", str(self.log), "--shutdown-timeout", "2",
             "--log-level", "DEBUG", *self.args],
            cwd=HERE, env=self.env, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
        err.close()
        for _ in range(300):  # bounded: 15 s
            if any(r.get("event") == "durable:worker_started" for r in self.records()):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        pytest.fail(
            f"worker did not start:\n{self.log.with_suffix('.err').read_text()}"
        )

    def kill(self) -> None:
        assert self.proc is not None
        kill_group(self.proc)

    def terminate(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            assert self.proc.wait(15) == 0
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail("worker still running 15 s after SIGTERM")

    def records(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        # The part after the last newline may be a line still being written.
        complete = self.log.read_text().split("\n")[:-1]
        return [json.loads(line) for line in complete if line]


@pytest.fixture
def env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    values = {
        "DURABLE_REDIS_URL": redis_url,
        "DURABLE_QUEUE": f"q-{uuid.uuid4().hex[:8]}",
        "DURABLE_IDLE_TIMEOUT": "1.5",
        "DURABLE_MARKS": str(tmp_path / "marks"),
        "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path]),
    }
    return {**os.environ, **values}


@pytest.fixture
def worker(env: dict[str, str], tmp_path: Path) -> Iterator[Worker]:
    w = Worker(env, tmp_path / "worker.log")
    w.start()
    try:
        yield w
    finally:
        if w.proc is not None and w.proc.poll() is None:
            w.kill()


@pytest.fixture
def queue(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    from supervisor.durable import DurableQueue

    sys.path.insert(0, str(HERE))
    import durable_app

    q = DurableQueue(env["DURABLE_REDIS_URL"], name=env["DURABLE_QUEUE"])
    for name, func in durable_app.queue.functions.items():
        q.task(func, name=name)
    return q


async def test_results_failures_retries_and_timeouts(
    queue: Any, worker: Worker
) -> None:
    """A worker process runs sent tasks; any process reads the outcomes."""
    import durable_app

    async with queue:
        ok = await queue.spawn(durable_app.add, 2, 3)
        assert ok.state is TaskState.PENDING
        bad = await queue.spawn("boom", "no luck")
        flaky = await queue.options(
            retry=Retry(attempts=2, on=ConnectionError, initial=0)
        ).spawn(durable_app.flaky, "k")
        slow = await queue.options(timeout=0.2, name="sleepy").spawn(
            durable_app.nap, "t", 30
        )
        done = {r.task_id: r for r in [
            await queue.wait(t.task_id, timeout=30) for t in (ok, bad, flaky, slow)
        ]}  # fmt: skip
    assert done[ok.task_id].state is TaskState.SUCCEEDED
    assert done[ok.task_id].result == 5
    assert done[bad.task_id].state is TaskState.FAILED
    assert done[bad.task_id].error_type == "ValueError"
    assert done[bad.task_id].error == "no luck"
    assert done[flaky.task_id].state is TaskState.SUCCEEDED
    assert done[flaky.task_id].attempts == 2
    assert done[slow.task_id].state is TaskState.FAILED
    assert done[slow.task_id].error_type == "TimeoutError"
    worker.terminate()
    logged = outcomes(worker.records())
    assert {k: [r["event"] for r in v] for k, v in logged.items()} == {
        ok.task_id: ["task:succeeded"],
        bad.task_id: ["task:failed"],
        flaky.task_id: ["task:succeeded"],
        slow.task_id: ["task:failed"],
    }
    assert logged[slow.task_id][0]["task_name"] == "sleepy"
    events = [r["event"] for r in worker.records() if r.get("task_id") == flaky.task_id]
    assert "task:retrying" in events


async def test_arguments_must_be_json_and_functions_registered(queue: Any) -> None:
    """What cannot be sent fails at the call, naming the value and the fix."""
    import durable_app

    async with queue:
        with pytest.raises(TypeError, match=r"keyword argument 'b'.*object at"):
            await queue.spawn(durable_app.add, 1, b=object())
        with pytest.raises(TypeError, match="not JSON-serializable"):
            await queue.spawn(durable_app.add, float("nan"), 1)
        with pytest.raises(TypeError, match=r"decorate the function with @queue\.task"):
            await queue.spawn(print, 1)
        with pytest.raises(LookupError, match="no task named 'nope'"):
            await queue.spawn("nope")
        with pytest.raises(TypeError, match="arguments do not match"):
            await queue.spawn(durable_app.add, 1)

        class Local(Exception):
            pass

        with pytest.raises(TypeError, match="define it at module level"):
            await queue.options(retry=Retry(on=Local)).spawn(durable_app.add, 1, 2)
    with pytest.raises(RuntimeError, match="is not open"):
        await queue.spawn(durable_app.add, 1, 2)


async def test_idempotency_key_runs_once(queue: Any, worker: Worker, env: Any) -> None:
    """A second send with the same key returns the first task; it runs once."""
    import durable_app

    async with queue:
        first = await queue.options(idempotency_key="order-7").spawn(
            durable_app.add, 20, 22
        )
        again = await queue.options(idempotency_key="order-7").spawn(
            durable_app.add, 20, 22
        )
        assert again.task_id == first.task_id
        done = await queue.wait(first.task_id, timeout=30)
        late = await queue.options(idempotency_key="order-7").spawn(
            durable_app.add, 20, 22
        )
    assert done.result == 42
    assert late.task_id == first.task_id
    assert late.state is TaskState.SUCCEEDED
    worker.terminate()
    marks = await anyio.Path(env["DURABLE_MARKS"]).read_text()
    assert marks.splitlines() == ["add 20 22"]


def test_kill_9_mid_run_every_task_accounted_once(
    env: dict[str, str], worker: Worker, tmp_path: Path
) -> None:
    """uvicorn app sends, worker SIGKILLed mid-run and restarted: none lost."""
    import httpx

    port = free_port()
    server = subprocess.Popen(
        [*uvicorn_command("durable_app:app", port)[:-4],
         "--app-dir", str(HERE), "--lifespan", "on"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    marks = Path(env["DURABLE_MARKS"])
    try:
        for _ in range(300):  # bounded: 15 s
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            time.sleep(0.05)
        else:
            pytest.fail("app not ready within 15 s")
        ids: list[str] = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            for batch in range(4):
                ids += http.post(
                    "/enqueue",
                    json={
                        "kind": "nap",
                        "n": 10,
                        "prefix": f"b{batch}-",
                        "seconds": 1.0,
                    },
                ).json()["ids"]
            ids += http.post(
                "/enqueue", json={"kind": "boom", "n": 3, "request_id": "req-boom"}
            ).json()["ids"]
        # Kill once some tasks are mid-run (started, not done).
        for _ in range(400):  # bounded: 20 s
            text = marks.read_text() if marks.exists() else ""
            if text.count("start ") > text.count("done ") + 2:
                break
            time.sleep(0.05)
        else:
            pytest.fail("no task was running")
        worker.kill()
        killed = marks.read_text()
        in_flight = {
            ln.split()[1] for ln in killed.splitlines() if ln.startswith("start")
        }
        in_flight -= {
            ln.split()[1] for ln in killed.splitlines() if ln.startswith("done")
        }
        assert in_flight
        worker.start()
        import redis

        client = redis.Redis.from_url(env["DURABLE_REDIS_URL"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = [
                client.hget(f"{env['DURABLE_QUEUE']}:task:{i}", "state") for i in ids
            ]
            if all(s in (b"succeeded", b"failed") for s in states):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"not all tasks finished within 60 s: {states}")
        client.close()
        worker.terminate()
    finally:
        kill_group(server)
    logged = outcomes(worker.records())
    assert sorted(logged) == sorted(ids)
    assert all(len(v) == 1 for v in logged.values()), logged
    assert sorted(v[0]["event"] for v in logged.values()) == (
        ["task:failed"] * 3 + ["task:succeeded"] * 40
    )
    done = {
        ln.split()[1] for ln in marks.read_text().splitlines() if ln.startswith("done")
    }
    assert in_flight <= done  # the killed ones ran again, to the end
    failures = subprocess.run(
        [sys.executable, "-m", "supervisor", "failures", "--json", str(worker.log)],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert failures.returncode == 1, failures.stderr
    (group,) = [json.loads(line) for line in failures.stdout.splitlines()]
    assert (group["task_name"], group["error_type"], group["count"]) == (
        "boom", "ValueError", 3,
    )  # fmt: skip
    assert group["request_ids"] == ["req-boom"]  # the sender's context travelled


def _lines(path: str) -> list[str]:
    return Path(path).read_text().splitlines() if Path(path).exists() else []


def _poll(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # bounded by the deadline
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"not within {timeout} s: {what}")


def test_sigterm_drains_then_cancels_and_the_cancelled_run_again(
    env: dict[str, str], worker: Worker
) -> None:
    """SIGTERM: a short task finishes in the drain, a long one runs again later."""
    import redis

    worker.restart("--shutdown-timeout", "1.5")
    sys.path.insert(0, str(HERE))
    import durable_app

    async def send() -> tuple[str, str]:
        from supervisor.durable import DurableQueue

        q = DurableQueue(env["DURABLE_REDIS_URL"], name=env["DURABLE_QUEUE"])
        q.task(durable_app.nap)
        async with q:
            short = await q.spawn(durable_app.nap, "short", 0.5)
            long = await q.spawn(durable_app.nap, "long", 3.0)
        return short.task_id, long.task_id

    short, long = anyio.run(send)
    marks = env["DURABLE_MARKS"]
    _poll(lambda: {"start short", "start long"} <= set(_lines(marks)), 15, "both ran")
    began = time.monotonic()
    worker.terminate()
    assert time.monotonic() - began < 1.5 + 3.0
    client = redis.Redis.from_url(env["DURABLE_REDIS_URL"])
    key = f"{env['DURABLE_QUEUE']}:task:"
    assert client.hget(key + short, "state") == b"succeeded"
    assert client.hget(key + long, "state") == b"pending"
    (cancelled,) = [r for r in worker.records() if r["event"] == "task:cancelled"]
    assert cancelled["task_id"] == long
    worker.start()
    _poll(lambda: client.hget(key + long, "state") == b"succeeded", 20, "long rerun")
    assert client.hget(key + long, "deliveries") == b"2"
    assert _lines(marks).count("done long") == 1
    assert _lines(marks).count("done short") == 1
    client.close()


def test_concurrency_limit_and_events(env: dict[str, str], worker: Worker) -> None:
    """--concurrency bounds running tasks; --on-event gets every task:* event."""
    worker.restart("--concurrency", "2", "--on-event", "durable_app:on_event")
    sys.path.insert(0, str(HERE))
    import durable_app

    async def send() -> list[str]:
        from supervisor.durable import DurableQueue

        q = DurableQueue(env["DURABLE_REDIS_URL"], name=env["DURABLE_QUEUE"])
        q.task(durable_app.nap)
        async with q:
            records = [await q.spawn(durable_app.nap, f"n{i}", 0.2) for i in range(6)]
            for r in records:
                await q.wait(r.task_id, timeout=30)
        return [r.task_id for r in records]

    ids = anyio.run(send)
    running = peak = 0
    for line in _lines(env["DURABLE_MARKS"]):
        running += line.startswith("start ") - line.startswith("done ")
        peak = max(peak, running)
    assert peak == 2
    events = [
        ln.split()[1:] for ln in _lines(env["DURABLE_MARKS"]) if ln.startswith("event")
    ]
    for task_id in ids:
        assert [e for e, i in events if i == task_id] == [
            "task:started",
            "task:succeeded",
        ]


def test_bad_unknown_duplicate_and_poison_messages(
    env: dict[str, str], worker: Worker
) -> None:
    """Messages the worker must not run are stored as such and acknowledged."""
    import redis

    client = redis.Redis.from_url(env["DURABLE_REDIS_URL"])
    queue, key = env["DURABLE_QUEUE"], f"{env['DURABLE_QUEUE']}:task:"

    def message(task_id: str, task: str, *args: Any) -> None:
        body = {"task_id": task_id, "task_name": task, "labels": {},
                "labels_types": None, "args": list(args), "kwargs": {}}  # fmt: skip
        client.xadd(queue, {b"data": json.dumps(body).encode()})

    client.hset(key + "dup", mapping={"name": "add", "state": "succeeded"})
    client.hset(key + "poison", mapping={"name": "add", "deliveries": 5})
    client.xadd(queue, {b"data": b"not json"})
    message("unknown", "no_such_task")
    message("dup", "add", 1, 2)
    message("poison", "add", 3, 4)
    message("fine", "add", 5, 6)
    _poll(lambda: client.hget(key + "fine", "state") == b"succeeded", 20, "fine ran")
    _poll(lambda: client.xpending(queue, "supervisor")["pending"] == 0, 10, "all acked")
    assert client.xlen(queue) == 0  # acknowledged entries are deleted
    assert client.hget(key + "unknown", "error_type") == b"UnknownTask"
    assert client.hget(key + "poison", "error_type") == b"TooManyDeliveries"
    assert client.hget(key + "dup", "state") == b"succeeded"
    assert _lines(env["DURABLE_MARKS"]) == ["add 5 6"]
    client.close()
    worker.terminate()
    events = [r["event"] for r in worker.records()]
    assert "durable:bad_message" in events
    assert "durable:duplicate" in events


async def test_options_and_registry_refuse_bad_values() -> None:
    """Bad options and clashing names fail at the call, saying what to pass."""
    from supervisor.durable import DurableQueue

    q = DurableQueue("redis://127.0.0.1:1/0", name="unused")

    @q.task(name="job")
    async def job() -> None: ...

    async def other() -> None: ...

    with pytest.raises(ValueError, match="already registered as 'job'"):
        q.task(other, name="job")
    with pytest.raises(ValueError, match="positive number of seconds"):
        q.options(timeout=0)
    with pytest.raises(TypeError, match=r"supervisor\.Retry"):
        q.options(retry=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="idempotency_key must be a non-empty str"):
        q.options(idempotency_key="")
    with pytest.raises(RuntimeError, match="is not open"):
        await q.get("x")


async def test_unknown_ids(queue: Any) -> None:
    """An id nobody sent: get() is None, wait() says it was never sent."""
    async with queue:
        assert await queue.get("never-sent") is None
        with pytest.raises(LookupError, match="never sent"):
            await queue.wait("never-sent", timeout=5)


async def test_redis_forgetting_scripts_is_survived(
    queue: Any, worker: Worker, env: dict[str, str]
) -> None:
    """After SCRIPT FLUSH (as after a Redis restart) both sides load them again."""
    import durable_app
    import redis

    async with queue:
        first = await queue.spawn(durable_app.add, 1, 1)
        assert (await queue.wait(first.task_id, timeout=30)).result == 2
        client = redis.Redis.from_url(env["DURABLE_REDIS_URL"])
        client.script_flush()
        client.close()
        second = await queue.spawn(durable_app.add, 2, 2)
        assert (await queue.wait(second.task_id, timeout=30)).result == 4


async def test_worker_hosted_in_our_task_group(
    queue: Any, anyio_backend_name: str
) -> None:
    """Worker.run inside an app's own task group; trio gets a clear refusal."""
    import anyio
    import durable_app

    from supervisor.durable import Worker

    worker = Worker(queue, concurrency=3)
    if anyio_backend_name == "trio":
        with pytest.raises(RuntimeError, match="asyncio only"):
            await worker.run()
        return
    async with queue, anyio.create_task_group() as tg:
        await tg.start(worker.run)
        record = await queue.spawn(durable_app.add, 4, 5)
        assert (await queue.wait(record.task_id, timeout=30)).result == 9
        assert worker.supervisor is not None
        assert worker.supervisor.stats().succeeded == 1
        worker.stop()
    with pytest.raises(ValueError, match="concurrency must be an int >= 1"):
        Worker(queue, concurrency=0)
