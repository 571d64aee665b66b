"""A seeded random storm of mixed tasks: the books always balance (SPEC 3 and 7).

Thousands of async and sync tasks succeed, fail or are cancelled at random
moments, with and without ``max_concurrency``. At random checkpoints
``spawned == pending + running + succeeded + failed + cancelled`` and the
records agree with ``stats()``; at the end ``stats()``, the terminal log
lines and the terminal events agree, and every task has exactly one
terminal event and one terminal log line.
"""

from __future__ import annotations

import functools
import random
import threading
from collections import Counter
from typing import Any

import anyio
import anyio.to_thread
import pytest
import structlog

from supervisor import Supervisor, TaskState
from supervisor.testing import capture_events

TOTAL = 3000
TERMINAL = {"task:succeeded", "task:failed", "task:cancelled"}
KINDS = ["async_ok", "async_fail", "sync_ok", "sync_fail", "async_block", "sync_block"]
WEIGHTS = [45, 15, 12, 10, 12, 6]
# Blocked tasks are let go in waves, so that slots, threads and the queue churn.
WAVE = 250


class StormError(Exception):
    """The failure raised on purpose by failing storm tasks."""


async def _async_ok(i: int, steps: int) -> int:
    for _ in range(steps):
        await anyio.lowlevel.checkpoint()
    return i


async def _async_fail(i: int, steps: int) -> None:
    for _ in range(steps):
        await anyio.lowlevel.checkpoint()
    raise StormError(f"async {i}")


def _sync_ok(i: int) -> int:
    return i


def _sync_fail(i: int) -> None:
    raise StormError(f"sync {i}")


async def _async_block(i: int, gate: anyio.Event) -> int:
    await gate.wait()
    return i


def _sync_block(i: int, gate: threading.Event) -> int:
    # Bounded: a cancelled (abandoned) thread must still end on its own.
    gate.wait(timeout=30)
    return i


class _Gates:
    """The current wave's gates for blocked async and sync tasks."""

    def __init__(self) -> None:
        self.opened: list[threading.Event] = []
        self.new()

    def new(self) -> None:
        self.async_gate = anyio.Event()
        self.sync_gate = threading.Event()
        self.opened.append(self.sync_gate)

    def open(self) -> None:
        self.async_gate.set()
        self.sync_gate.set()


def _check_books(sup: Supervisor, tasks: dict[str, Any]) -> None:
    """Counters balance and agree with the records, right now."""
    stats = sup.stats()
    assert stats.spawned == len(tasks)
    assert stats.spawned == (
        stats.pending + stats.running + stats.succeeded + stats.failed + stats.cancelled
    )
    states = Counter(task.state for task, _, _ in tasks.values())
    assert states[TaskState.PENDING] == stats.pending
    assert states[TaskState.RUNNING] == stats.running
    assert states[TaskState.SUCCEEDED] == stats.succeeded
    assert states[TaskState.FAILED] == stats.failed
    assert states[TaskState.CANCELLED] == stats.cancelled


@pytest.mark.parametrize(
    ("max_concurrency", "end_with", "history", "seed"),
    [(50, "wait_idle", 10_000, 1234), (None, "shutdown", 200, 5678)],
    ids=["max_concurrency-50", "unlimited"],
)
async def test_storm_books_balance(
    max_concurrency: int | None,
    end_with: str,
    history: int,
    seed: int,
    anyio_backend_name: str,
) -> None:
    """Under a random storm, stats, log lines, events and records always agree."""
    rng = random.Random(seed)
    gates = _Gates()
    # task_id -> (record, kind, reason given to a successful cancel() or None)
    tasks: dict[str, Any] = {}
    order: list[str] = []
    # spawn_threadsafe returns only an id, so the record must still be in the
    # history to be looked up: only where the history is large.
    threadsafe_share = 0.01 if history >= TOTAL else 0.0

    try:
        with structlog.testing.capture_logs() as logs, capture_events() as captured:
            sup = Supervisor(
                name="storm",
                max_concurrency=max_concurrency,
                history=history,
                shutdown_timeout=30,
            )
            async with sup:
                with anyio.fail_after(60):
                    for i in range(TOTAL):
                        kind = rng.choices(KINDS, WEIGHTS)[0]
                        steps = rng.randrange(4)
                        call: tuple[Any, ...] = {
                            "async_ok": (_async_ok, i, steps),
                            "async_fail": (_async_fail, i, steps),
                            "sync_ok": (_sync_ok, i),
                            "sync_fail": (_sync_fail, i),
                            "async_block": (_async_block, i, gates.async_gate),
                            "sync_block": (_sync_block, i, gates.sync_gate),
                        }[kind]
                        how = rng.random()
                        if how < threadsafe_share:
                            task_id = await anyio.to_thread.run_sync(
                                functools.partial(sup.spawn_threadsafe, *call)
                            )
                            task = sup.get(task_id)
                            assert task is not None
                        elif how < 0.5:
                            task = await sup.spawn(*call)
                        else:
                            task = sup.spawn_nowait(*call)
                        tasks[task.task_id] = (task, kind, None)
                        order.append(task.task_id)

                        if rng.random() < 0.08:
                            # Cancel a random task: maybe pending, running or done.
                            victim_id = rng.choice(order)
                            if rng.random() < 0.3:
                                victim_id = task.task_id
                            victim, victim_kind, reason = tasks[victim_id]
                            new_reason = f"storm cancel {i}"
                            if victim.cancel(new_reason):
                                assert reason is None
                                tasks[victim_id] = (victim, victim_kind, new_reason)
                        if rng.random() < 0.15:
                            for _ in range(rng.randrange(1, 4)):
                                await anyio.lowlevel.checkpoint()
                        if rng.random() < 0.03 or i % 500 == 0:
                            _check_books(sup, tasks)
                        if i % WAVE == WAVE - 1:
                            gates.open()
                            gates.new()
                    _check_books(sup, tasks)
                    gates.open()
                    if end_with == "wait_idle":
                        await sup.wait_idle()
                        _check_books(sup, tasks)
            # shutdown() is idempotent: this returns the report of the one above.
            report = await sup.shutdown()
            stats = sup.stats()
    finally:
        for sync_gate in gates.opened:  # no thread outlives the test
            sync_gate.set()

    # -- the books ---------------------------------------------------------
    assert len(tasks) == TOTAL
    _check_books(sup, tasks)
    assert stats.pending == stats.running == 0
    assert stats.spawned == TOTAL
    # The gate was open: shutdown only drained, it had nothing to cancel.
    assert report.cancelled == ()
    assert report.abandoned == ()
    if end_with == "shutdown":
        assert report.completed > 0

    # Every record ended as its kind and its cancel() say it must.
    late_cancels = []
    for task, kind, reason in tasks.values():
        assert task.done
        if reason is not None:
            assert task.cancel_reason == reason
            if task.state is TaskState.CANCELLED:
                continue
            # A cancel() that landed after the task's last await (trio only):
            # a body that returned still ends CANCELLED (see test_spawn's
            # test_cancel_that_returned_true_ends_the_task_cancelled), one
            # that raised keeps its error, which is more useful to see.
            assert kind.endswith("_fail"), (kind, task)
            late_cancels.append(task)
        if kind.endswith("_fail"):
            assert task.state is TaskState.FAILED, (kind, task)
            assert isinstance(task.error, StormError)
        else:
            assert task.state is TaskState.SUCCEEDED, (kind, task)
            assert task.result is not None

    if anyio_backend_name != "trio":
        assert late_cancels == []
    assert len(late_cancels) < 10

    # Log lines: exactly one terminal line per task, matching its record.
    terminal_lines = [line for line in logs if line["event"] in TERMINAL]
    assert not [line for line in logs if line["event"] == "task:started"]
    lines_by_task = Counter(line["task_id"] for line in terminal_lines)
    assert set(lines_by_task) == set(tasks)
    assert set(lines_by_task.values()) == {1}
    for line in terminal_lines:
        task = tasks[line["task_id"]][0]
        assert line["event"] == f"task:{task.state.value}"
        assert line["attempt"] == task.attempts

    # Events: one terminal event per task, after its one task:started (if any).
    events = [(event["event"], event) for event in captured]
    terminal_events = [(n, d) for n, d in events if n in TERMINAL]
    events_by_task = Counter(d["task_id"] for _, d in terminal_events)
    assert set(events_by_task) == set(tasks)
    assert set(events_by_task.values()) == {1}
    started = Counter(d["task_id"] for n, d in events if n == "task:started")
    assert set(started.values()) <= {1}
    seen_terminal: set[str] = set()
    for name, data in events:
        task = tasks[data["task_id"]][0]
        if name == "task:started":
            assert data["task_id"] not in seen_terminal
            assert task.started_at is not None
        elif name in TERMINAL:
            seen_terminal.add(data["task_id"])
            assert name == f"task:{task.state.value}"
            assert data["attempt"] == (1 if task.started_at is not None else 0)
            assert data["attempt"] == task.attempts
    for task_id, (task, _, _) in tasks.items():
        assert (task_id in started) == (task.started_at is not None)

    # And the three views agree on the totals.
    by_state = {
        "task:succeeded": stats.succeeded,
        "task:failed": stats.failed,
        "task:cancelled": stats.cancelled,
    }
    assert Counter(line["event"] for line in terminal_lines) == Counter(by_state)
    assert Counter(n for n, _ in terminal_events) == Counter(by_state)
    # The storm was a storm: every outcome happened, many times.
    assert min(by_state.values()) > 50
