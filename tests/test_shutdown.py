"""Shutdown: refuse new work, drain, cancel at the deadline, report every task."""

from __future__ import annotations

import threading
import time
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from supervisor import Supervisor, SupervisorClosed, TaskState
from supervisor.testing import capture_events

# The SPEC's bound: shutdown never takes longer than its timeout plus ~1 s.
# Tests allow generous slack on top for a loaded CI machine.
SLACK = 1.0 + 2.0


def _of(events: list[dict[str, Any]], task_id: str) -> list[str]:
    """The names of one task's events, in order."""
    return [event["event"] for event in events if event["task_id"] == task_id]


async def test_drain_lets_running_work_finish() -> None:
    """Tasks that finish within the timeout complete; nothing is cancelled."""
    release = anyio.Event()
    started = anyio.Event()

    async def work() -> str:
        started.set()
        await release.wait()
        return "done"

    sup = Supervisor("app", shutdown_timeout=30)
    await sup.startup()
    task = await sup.spawn(work)
    await started.wait()

    async def release_once_closing() -> None:
        for _ in range(10_000):  # bounded poll: shutdown starts right away
            if sup.closed:
                break
            await anyio.sleep(0.001)
        release.set()

    await sup.spawn(release_once_closing)
    report = await sup.shutdown()
    assert task.state is TaskState.SUCCEEDED
    assert task.result == "done"
    assert report.completed == 2
    assert report.cancelled == ()
    assert report.clean


@pytest.mark.virtual_time
async def test_drain_ends_when_the_work_does_not_at_the_deadline(
    seconds: float, virtual_clock: bool
) -> None:
    """A 10 s task under a 30 s shutdown timeout: shutdown takes 10 s, no more."""
    started = anyio.Event()

    async def work() -> str:
        started.set()
        await anyio.sleep(10 * seconds)
        return "done"

    sup = Supervisor("app", shutdown_timeout=30 * seconds)
    await sup.startup()
    task = await sup.spawn(work)
    await started.wait()
    t0 = anyio.current_time()
    report = await sup.shutdown()
    elapsed = anyio.current_time() - t0
    assert task.result == "done"
    assert report.clean
    if virtual_clock:
        assert elapsed == pytest.approx(10)
    else:
        assert elapsed < 30 * seconds + SLACK


@pytest.mark.virtual_time
async def test_deadline_cancels_running_and_pending_with_reason_shutdown(
    seconds: float, virtual_clock: bool
) -> None:
    """At the deadline running and unstarted tasks are cancelled, logged, emitted."""
    started = anyio.Event()

    async def forever() -> None:
        started.set()
        await anyio.sleep_forever()

    with capture_logs() as logs, capture_events() as events:
        sup = Supervisor("app", shutdown_timeout=30 * seconds, max_concurrency=1)
        await sup.startup()
        running = await sup.spawn(forever)
        waiting = await sup.spawn(forever)
        await started.wait()
        assert waiting.state is TaskState.PENDING
        t0 = anyio.current_time()
        report = await sup.shutdown()
        elapsed = anyio.current_time() - t0

    if virtual_clock:  # the whole timeout, then cancellation takes no time
        assert elapsed == pytest.approx(30)
    else:
        assert elapsed >= 30 * seconds * 0.9
        assert elapsed < 30 * seconds + SLACK
    assert set(report.cancelled) == {running, waiting}
    assert report.completed == 0
    for task in (running, waiting):
        assert task.state is TaskState.CANCELLED
        assert task.cancel_reason == "shutdown"
    assert _of(events, running.task_id) == ["task:started", "task:cancelled"]
    assert _of(events, waiting.task_id) == ["task:cancelled"]
    cancelled = {d["task_id"]: d for d in events if d["event"] == "task:cancelled"}
    assert cancelled[waiting.task_id]["attempt"] == 0
    assert cancelled[running.task_id]["reason"] == "shutdown"
    lines = [line for line in logs if line["event"] == "task:cancelled"]
    assert {line["task_id"] for line in lines} == {running.task_id, waiting.task_id}
    assert all(
        line["log_level"] == "warning" and line["reason"] == "shutdown"
        for line in lines
    )
    stats = sup.stats()
    assert (stats.cancelled, stats.pending, stats.running) == (2, 0, 0)


async def test_blocking_sync_task_is_abandoned_and_stays_cancelled() -> None:
    """A thread that cannot stop is reported abandoned; its late end changes nothing."""
    entered = threading.Event()
    release = threading.Event()

    def block() -> str:
        entered.set()
        release.wait(30)
        return "late"

    with capture_logs() as logs, capture_events() as events:
        sup = Supervisor("app", shutdown_timeout=0.05)
        await sup.startup()
        task = await sup.spawn(block)
        await anyio.to_thread.run_sync(entered.wait, 10)
        t0 = anyio.current_time()
        report = await sup.shutdown()
        elapsed = anyio.current_time() - t0
    try:
        assert elapsed < 0.05 + SLACK
        assert report.abandoned == (task,)
        assert report.cancelled == (task,)
        assert task.state is TaskState.CANCELLED
        assert task.abandoned
        (line,) = [entry for entry in logs if entry["event"] == "task:cancelled"]
        assert line["abandoned"] is True
        assert line["reason"] == "shutdown"
        assert _of(events, task.task_id) == ["task:started", "task:cancelled"]
    finally:
        release.set()
    await anyio.sleep(0.1)  # let the worker thread finish; the record must not change
    assert task.state is TaskState.CANCELLED
    assert task.result is None
    assert sup.stats().cancelled == 1


async def test_shutdown_timeout_zero_cancels_at_once() -> None:
    """shutdown_timeout=0 (and shutdown(timeout=0)) cancel without draining."""
    for sup, kwargs in (
        (Supervisor("a", shutdown_timeout=0), {}),
        (Supervisor("b", shutdown_timeout=60), {"timeout": 0}),
    ):
        await sup.startup()
        task = await sup.spawn(anyio.sleep, 60)
        t0 = anyio.current_time()
        report = await sup.shutdown(**kwargs)
        assert anyio.current_time() - t0 < SLACK
        assert report.cancelled == (task,)


async def test_spawn_during_shutdown_is_refused() -> None:
    """Once shutdown begins, spawning raises SupervisorClosed at once."""
    seen: list[BaseException] = []
    started = anyio.Event()

    async def spawns_while_closing(sup: Supervisor) -> None:
        started.set()
        for _ in range(10_000):  # bounded poll: shutdown starts right away
            if sup.closed:
                break
            await anyio.sleep(0.001)
        try:
            await sup.spawn(anyio.sleep, 0)
        except SupervisorClosed as exc:
            seen.append(exc)

    sup = Supervisor("app", shutdown_timeout=10)
    await sup.startup()
    task = await sup.spawn(spawns_while_closing, sup)
    await started.wait()
    await sup.shutdown()
    assert task.state is TaskState.SUCCEEDED
    assert len(seen) == 1
    assert "shut down" in str(seen[0])
    with pytest.raises(SupervisorClosed):
        sup.spawn_nowait(anyio.sleep, 0)


async def test_task_ignoring_cancellation_cannot_hold_shutdown(
    anyio_backend: str,
) -> None:
    """A task that keeps working after cancellation is abandoned past the grace."""
    if anyio_backend == "trio":
        pytest.skip(
            "trio re-delivers Cancelled at every checkpoint: a task cannot ignore "
            "cancellation without shielding itself, which SPEC 3 lets hold shutdown"
        )
    started = anyio.Event()
    done = threading.Event()  # the test's own stop signal, not a cancellation

    async def stubborn() -> None:
        started.set()
        for _ in range(200):  # bounded: ~10 s at most
            try:
                await anyio.sleep(0.05)
            except anyio.get_cancelled_exc_class():
                pass  # deliberately wrong: swallows cancellation
            if done.is_set():
                return

    sup = Supervisor("app", shutdown_timeout=0.1)
    await sup.startup()
    task = await sup.spawn(stubborn)
    await started.wait()
    t0 = anyio.current_time()
    try:
        report = await sup.shutdown()
        assert anyio.current_time() - t0 < 0.1 + SLACK
        assert task.state is TaskState.CANCELLED
        assert task.abandoned
        assert report.cancelled == (task,)
    finally:
        done.set()  # else the test's loop waits out the stubborn task's 10 s


@pytest.mark.virtual_time
async def test_shielded_task_is_waited_for_not_cancelled(
    seconds: float, virtual_clock: bool
) -> None:
    """A shielded task survives the deadline; shutdown waits for it and says so."""
    started = anyio.Event()

    async def must_finish() -> str:
        started.set()
        await anyio.sleep(60 * seconds)
        return "saved"

    with capture_logs() as logs:
        sup = Supervisor("app", shutdown_timeout=seconds)
        await sup.startup()
        task = await sup.options(shield=True).spawn(must_finish)
        other = await sup.spawn(anyio.sleep_forever)
        await started.wait()
        t0 = anyio.current_time()
        report = await sup.shutdown()
    if virtual_clock:  # past its 1 s timeout, shutdown waits the shielded 60 s
        assert anyio.current_time() - t0 == pytest.approx(60)
    assert task.state is TaskState.SUCCEEDED
    assert task.result == "saved"
    assert report.shielded == (task,)
    assert report.cancelled == (other,)
    assert any(line["event"] == "supervisor:waiting_for_shielded" for line in logs)


async def test_hanging_async_event_handler_cannot_hold_shutdown() -> None:
    """An on_event handler that never returns is cut off within the bound."""

    async def hang(name: str, data: dict[str, Any]) -> None:
        if name == "task:cancelled":
            await anyio.sleep_forever()

    sup = Supervisor("app", shutdown_timeout=0.05, on_event=hang, event_timeout=60)
    await sup.startup()
    task = await sup.spawn(anyio.sleep_forever)
    await anyio.sleep(0.01)
    t0 = anyio.current_time()
    await sup.shutdown()
    assert anyio.current_time() - t0 < 0.05 + SLACK
    assert task.state is TaskState.CANCELLED


async def test_every_event_is_delivered_before_shutdown_returns() -> None:
    """Async handlers have completed for every task's terminal event."""
    delivered: list[str] = []

    async def slow_handler(name: str, data: dict[str, Any]) -> None:
        await anyio.sleep(0.01)
        delivered.append(f"{data['task_id']}:{name}")

    sup = Supervisor("app", shutdown_timeout=5, on_event=slow_handler)
    await sup.startup()
    tasks = [await sup.spawn(anyio.sleep, 0.01 * i) for i in range(5)]
    await sup.shutdown()
    for task in tasks:
        assert f"{task.task_id}:task:succeeded" in delivered


async def test_report_counts_tasks_completed_during_drain_in_any_state() -> None:
    """completed counts successes and failures that ended during the drain."""
    go = anyio.Event()

    async def ok() -> None:
        await go.wait()

    async def bad() -> None:
        await go.wait()
        raise ValueError("no")

    sup = Supervisor("app", shutdown_timeout=10)
    await sup.startup()
    await sup.spawn(ok)
    await sup.spawn(bad)
    already = await sup.spawn(anyio.sleep, 0)
    await already.wait()
    go.set()
    report = await sup.shutdown()
    assert report.completed == 2
    assert sup.stats().failed == 1


async def test_async_with_body_error_cancels_tasks_and_propagates() -> None:
    """Like a nursery, a failing body cancels the work and its error propagates."""
    sup = Supervisor("app", shutdown_timeout=60)
    t0 = time.monotonic()
    with pytest.raises(ZeroDivisionError):
        async with sup:
            task = await sup.spawn(anyio.sleep_forever)
            await anyio.lowlevel.checkpoint()
            1 / 0  # noqa: B018
    assert time.monotonic() - t0 < SLACK
    assert task.state is TaskState.CANCELLED
    assert task.cancel_reason == "shutdown"


async def test_host_cancelled_from_outside_still_accounts_for_every_task() -> None:
    """An outer cancel scope around `async with` still ends every task cancelled."""
    with anyio.move_on_after(0.05):
        async with Supervisor("app", shutdown_timeout=60) as sup:
            task = await sup.spawn(anyio.sleep_forever)
            await anyio.sleep_forever()
    assert sup.closed
    assert task.state is TaskState.CANCELLED
    stats = sup.stats()
    assert stats.spawned == stats.cancelled == 1
