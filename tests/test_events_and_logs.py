"""Events and log lines: order, content, delivery guarantees and guards (SPEC 3 and 7).

Every task emits ``task:started`` and one terminal event, in order, all
delivered (async handlers completed) before ``wait_idle()`` / ``shutdown()``
return; a handler that raises or hangs is logged and cut off, never breaking
the task. Every task gets exactly one terminal log line at the right level
with the fixed keys, and no start line; a logger that raises falls back to
the stdlib; the library never configures structlog itself.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import anyio
import pytest
import structlog
from structlog.typing import EventDict

from supervisor import BackgroundTask, Supervisor, TaskCancelled, TaskFailed, TaskState

TERMINAL = ("task:succeeded", "task:failed", "task:cancelled")
LOG_KEYS = {"task_id", "task_name", "supervisor", "state", "attempt", "duration_s"}
EVENT_KEYS = {"task_id", "name", "supervisor", "attempt", "state"}


class Events:
    """A sync ``on_event`` handler that keeps every event."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, name: str, data: dict[str, Any]) -> None:
        self.seen.append((name, dict(data)))

    def for_task(self, task_id: str) -> list[tuple[str, dict[str, Any]]]:
        return [(n, d) for n, d in self.seen if d["task_id"] == task_id]

    def names(self, task_id: str) -> list[str]:
        return [n for n, _ in self.for_task(task_id)]


def _terminal_lines(logs: list[EventDict], task_id: str) -> list[EventDict]:
    return [line for line in logs if line.get("task_id") == task_id]


async def _ok() -> str:
    return "ok"


async def _fail() -> None:
    raise ValueError("bad value")


def _sync_fail() -> None:
    raise LookupError("not here")


async def test_events_arrive_in_order_with_the_documented_data() -> None:
    """Each task gets task:started then one terminal event with the right keys."""
    events = Events()
    entered = anyio.Event()

    async def forever() -> None:
        entered.set()
        await anyio.sleep_forever()

    async with Supervisor(name="evt", on_event=events) as sup:
        ok = await sup.spawn(_ok)
        failed = await sup.spawn(_fail)
        sync_failed = await sup.spawn(_sync_fail)
        cancelled = await sup.options(name="sleeper").spawn(forever)
        with anyio.fail_after(10):
            await entered.wait()
        cancelled.cancel("enough")
        with anyio.fail_after(10):
            await sup.wait_idle()

    assert events.names(ok.task_id) == ["task:started", "task:succeeded"]
    assert events.names(failed.task_id) == ["task:started", "task:failed"]
    assert events.names(sync_failed.task_id) == ["task:started", "task:failed"]
    assert events.names(cancelled.task_id) == ["task:started", "task:cancelled"]
    for name, data in events.seen:
        assert set(data) >= EVENT_KEYS, name
        assert data["supervisor"] == "evt"
        assert data["attempt"] == 1
    started, done = (d for _, d in events.for_task(ok.task_id))
    assert started["state"] == "running"
    assert done["state"] == "succeeded"
    assert done["name"] == "_ok"
    assert "error" not in done
    fail_data = events.for_task(failed.task_id)[1][1]
    assert fail_data["error"] == "bad value"
    assert fail_data["error_type"] == "ValueError"
    assert fail_data["state"] == "failed"
    sync_data = events.for_task(sync_failed.task_id)[1][1]
    assert sync_data["error"] == str(LookupError("not here"))
    assert sync_data["error_type"] == "LookupError"
    cancel_data = events.for_task(cancelled.task_id)[1][1]
    assert cancel_data["reason"] == "enough"
    assert cancel_data["name"] == "sleeper"
    assert cancel_data["state"] == "cancelled"


async def test_async_handler_has_completed_when_wait_idle_returns() -> None:
    """Async handlers are awaited: every event is recorded when wait_idle() returns."""
    seen: list[tuple[str, str]] = []

    async def handler(name: str, data: dict[str, Any]) -> None:
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        seen.append((name, data["task_id"]))

    async with Supervisor(on_event=handler) as sup:
        tasks = [await sup.spawn(_ok) for _ in range(5)]
        tasks += [await sup.spawn(_fail) for _ in range(5)]
        with anyio.fail_after(10):
            await sup.wait_idle()
        assert len(seen) == 20
        for task in tasks:
            names = [n for n, tid in seen if tid == task.task_id]
            assert names == ["task:started", f"task:{task.state.value}"]


async def test_wait_idle_waits_for_a_slow_async_handler() -> None:
    """wait_idle() does not return while an async handler is still running."""
    in_handler = anyio.Event()
    gate = anyio.Event()
    finished: list[str] = []
    idle_returned = anyio.Event()

    async def handler(name: str, data: dict[str, Any]) -> None:
        if name == "task:succeeded":
            in_handler.set()
            await gate.wait()
            finished.append(name)

    async def idle(sup: Supervisor) -> None:
        await sup.wait_idle()
        idle_returned.set()

    async with Supervisor(on_event=handler) as sup:
        task = await sup.spawn(_ok)
        with anyio.fail_after(10):
            await in_handler.wait()
        async with anyio.create_task_group() as tg:
            tg.start_soon(idle, sup)
            await anyio.wait_all_tasks_blocked()
            assert task.state is TaskState.SUCCEEDED
            assert not idle_returned.is_set()
            gate.set()
            with anyio.fail_after(10):
                await idle_returned.wait()
            assert finished == ["task:succeeded"]


async def test_sync_handler_returning_an_awaitable_is_awaited() -> None:
    """A sync handler returning an awaitable (like QakeAPI's emit) gets it awaited."""
    seen: list[str] = []

    async def deliver(name: str) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(name)

    def emit(name: str, data: dict[str, Any]) -> Any:
        return deliver(name)

    async with Supervisor(on_event=emit) as sup:
        await sup.spawn(_ok)
        with anyio.fail_after(10):
            await sup.wait_idle()
        assert seen == ["task:started", "task:succeeded"]


async def test_every_event_is_delivered_before_shutdown_returns() -> None:
    """Tasks ending during shutdown have their events delivered when it returns."""
    seen: list[tuple[str, str]] = []
    tasks: list[BackgroundTask[Any]] = []

    async def handler(name: str, data: dict[str, Any]) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append((name, data["task_id"]))

    async with Supervisor(on_event=handler, shutdown_timeout=0) as sup:
        for _ in range(5):
            tasks.append(await sup.spawn(anyio.sleep_forever))
            tasks.append(await sup.spawn(_ok))
            tasks.append(sup.spawn_nowait(_fail))
    for task in tasks:
        assert task.done
        terminal = [n for n, tid in seen if tid == task.task_id and n in TERMINAL]
        assert terminal == [f"task:{task.state.value}"]
    assert sum(t.state is TaskState.CANCELLED for t in tasks) >= 5


async def test_a_raising_handler_is_logged_and_events_keep_flowing() -> None:
    """A handler that raises is logged; later events flow and records stay right."""
    seen: list[tuple[str, str]] = []

    def handler(name: str, data: dict[str, Any]) -> None:
        seen.append((name, data["task_id"]))
        raise RuntimeError(f"handler broke on {name}")

    with structlog.testing.capture_logs() as logs:
        async with Supervisor(on_event=handler) as sup:
            ok = await sup.spawn(_ok)
            failed = await sup.spawn(_fail)
            with anyio.fail_after(10):
                assert await ok.wait() == "ok"
                with pytest.raises(TaskFailed):
                    await failed.wait()
                await sup.wait_idle()
            stats = sup.stats()
    assert (stats.spawned, stats.succeeded, stats.failed) == (2, 1, 1)
    assert ok.state is TaskState.SUCCEEDED
    assert failed.state is TaskState.FAILED
    assert isinstance(failed.error, ValueError)
    for task, terminal in ((ok, "task:succeeded"), (failed, "task:failed")):
        assert [n for n, tid in seen if tid == task.task_id] == [
            "task:started",
            terminal,
        ]
    broken = [
        line for line in logs if line["event"] == "supervisor:event_handler_failed"
    ]
    assert len(broken) == 4
    assert {(b["event_name"], b["task_id"]) for b in broken} == set(seen)
    for line in broken:
        assert line["log_level"] == "error"
        assert line["error_type"] == "RuntimeError"
        assert isinstance(line["exc_info"], RuntimeError)
        assert line["error"] == f"handler broke on {line['event_name']}"
    # The tasks' own terminal lines are still there, once each.
    assert [
        line["event"]
        for line in _terminal_lines(logs, ok.task_id)
        if line["event"] in TERMINAL
    ] == ["task:succeeded"]


async def test_a_hanging_handler_is_cut_off_after_event_timeout() -> None:
    """An async handler that never returns is cut off after event_timeout, logged."""
    seen: list[str] = []

    async def handler(name: str, data: dict[str, Any]) -> None:
        seen.append(name)
        if name == "task:started":
            await anyio.sleep_forever()

    with structlog.testing.capture_logs() as logs:
        async with Supervisor(on_event=handler, event_timeout=0.1) as sup:
            task = await sup.spawn(_ok)
            with anyio.fail_after(10):
                assert await task.wait() == "ok"
                await sup.wait_idle()
    assert seen == ["task:started", "task:succeeded"]
    timeouts = [
        line for line in logs if line["event"] == "supervisor:event_handler_timeout"
    ]
    assert len(timeouts) == 1
    assert timeouts[0]["log_level"] == "warning"
    assert timeouts[0]["event_name"] == "task:started"
    assert timeouts[0]["task_id"] == task.task_id
    assert timeouts[0]["timeout_s"] == pytest.approx(0.1)


async def test_one_terminal_log_line_per_task_at_the_right_level() -> None:
    """Success logs at debug, failure at error with exc_info, cancel at warning."""
    entered = anyio.Event()

    async def forever() -> None:
        entered.set()
        await anyio.sleep_forever()

    with structlog.testing.capture_logs() as logs:
        async with Supervisor(name="logs") as sup:
            ok = await sup.spawn(_ok)
            failed = await sup.spawn(_fail)
            sync_failed = await sup.spawn(_sync_fail)
            running = await sup.spawn(forever)
            never_started = sup.spawn_nowait(_ok)
            never_started.cancel("not needed")
            with anyio.fail_after(10):
                await entered.wait()
            running.cancel("stop")
            with anyio.fail_after(10):
                await sup.wait_idle()

    assert not [line for line in logs if line["event"] == "task:started"]
    tasks = (ok, failed, sync_failed, running, never_started)
    for task in tasks:
        lines = _terminal_lines(logs, task.task_id)
        assert len(lines) == 1, lines
        line = lines[0]
        assert set(line) >= LOG_KEYS
        assert line["event"] == f"task:{task.state.value}"
        assert line["task_name"] == task.name
        assert line["supervisor"] == "logs"
        assert line["state"] == task.state.value
        assert line["attempt"] == task.attempts

    ok_line = _terminal_lines(logs, ok.task_id)[0]
    assert ok_line["log_level"] == "debug"
    assert ok_line["attempt"] == 1
    assert isinstance(ok_line["duration_s"], float)
    assert ok_line["duration_s"] >= 0

    for task, error_type in ((failed, "ValueError"), (sync_failed, "LookupError")):
        line = _terminal_lines(logs, task.task_id)[0]
        assert line["log_level"] == "error"
        assert line["exc_info"] is task.error
        assert line["error"] == str(task.error)
        assert line["error_type"] == error_type

    running_line = _terminal_lines(logs, running.task_id)[0]
    assert running_line["log_level"] == "warning"
    assert running_line["reason"] == "stop"
    assert running_line["attempt"] == 1

    pending_line = _terminal_lines(logs, never_started.task_id)[0]
    assert pending_line["log_level"] == "warning"
    assert pending_line["reason"] == "not needed"
    assert pending_line["attempt"] == 0
    assert pending_line["duration_s"] is None

    counts = Counter(line["event"] for line in logs if line["event"] in TERMINAL)
    assert counts == Counter(
        {"task:succeeded": 1, "task:failed": 2, "task:cancelled": 2}
    )
    started = [line for line in logs if line["event"] == "supervisor:started"]
    assert len(started) == 1
    assert started[0]["log_level"] == "info"


class _BrokenLogger:
    """A logger whose every method raises, like a misconfigured processor chain."""

    def __init__(self) -> None:
        self.calls = 0

    def __getattr__(self, level: str) -> Any:
        def log(*_args: Any, **_kwargs: Any) -> None:
            self.calls += 1
            raise OSError(f"log sink closed ({level})")

        return log


async def test_a_raising_logger_never_breaks_records_or_stats(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A logger that raises falls back to stdlib logging; tasks and stats are intact."""
    broken = _BrokenLogger()
    events = Events()
    caplog.set_level(logging.ERROR, logger="supervisor")
    async with Supervisor(logger=broken, on_event=events) as sup:
        ok = await sup.spawn(_ok)
        failed = await sup.spawn(_fail)
        sync_failed = await sup.spawn(_sync_fail)
        pending = sup.spawn_nowait(_ok)
        pending.cancel()
        with anyio.fail_after(10):
            assert await ok.wait() == "ok"
            with pytest.raises(TaskFailed):
                await failed.wait()
            with pytest.raises(TaskCancelled):
                await pending.wait()
            await sup.wait_idle()
        stats = sup.stats()
    assert (stats.spawned, stats.succeeded, stats.failed, stats.cancelled) == (
        4,
        1,
        2,
        1,
    )
    assert (stats.pending, stats.running) == (0, 0)
    assert sync_failed.state is TaskState.FAILED
    assert isinstance(sync_failed.error, LookupError)
    assert broken.calls >= 5
    for task in (ok, failed, sync_failed, pending):
        assert events.names(task.task_id)[-1] == f"task:{task.state.value}"
    messages = [r.getMessage() for r in caplog.records if r.name == "supervisor"]
    assert all(
        r.levelno == logging.ERROR for r in caplog.records if r.name == "supervisor"
    )
    for event in ("task:succeeded", "task:failed", "task:cancelled"):
        assert any(event in m for m in messages), event
    failure = next(m for m in messages if "task:failed" in m and failed.task_id in m)
    assert "log sink closed" in failure
    assert "bad value" in failure
    assert any("supervisor:started" in m for m in messages)


async def test_the_library_never_configures_structlog() -> None:
    """Using a supervisor with its default logger leaves structlog unconfigured."""
    structlog.reset_defaults()
    assert not structlog.is_configured()
    import supervisor.logs  # noqa: F401 - importing the recipe module must not configure

    events = Events()
    async with Supervisor(on_event=events) as sup:
        await sup.spawn(_ok)
        await sup.spawn(_fail)
        await sup.spawn(_sync_fail)
        with anyio.fail_after(10):
            await sup.wait_idle()
    assert len(events.seen) == 6
    assert not structlog.is_configured()
