"""Limits: max_concurrency, max_pending and thread_limit (SPEC 2, 3 and fixed details).

``max_concurrency`` bounds RUNNING tasks and starts waiting ones in FIFO
order on both backends; ``max_pending`` bounds the waiting ones (live tasks
are at most ``max_concurrency + max_pending``): ``spawn`` then waits for room
and ``spawn_nowait`` / ``spawn_threadsafe`` raise ``Overloaded`` without
leaving a trace; ``thread_limit`` bounds the worker threads of sync tasks,
and a sync task waiting for a thread is still PENDING.
"""

from __future__ import annotations

import gc
import threading
import warnings
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import pytest

from supervisor import Overloaded, Supervisor, SupervisorError, TaskState


class _Gauge:
    """Counts bodies in flight and remembers the peak (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def enter(self) -> None:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        with self._lock:
            self.now -= 1


async def test_max_concurrency_bounds_running_tasks() -> None:
    """Never more than max_concurrency bodies run at once; the rest are PENDING."""
    limit, total = 3, 20
    gauge = _Gauge()
    release = anyio.Event()
    full = anyio.Event()
    running_seen: list[int] = []

    async def body(sup: Supervisor) -> None:
        gauge.enter()
        running_seen.append(sup.stats().running)
        if gauge.now == limit:
            full.set()
        await release.wait()
        for _ in range(3):  # let later tasks overlap with this one
            await anyio.lowlevel.checkpoint()
        gauge.leave()

    async with Supervisor(max_concurrency=limit) as sup:
        tasks = [await sup.spawn(body, sup) for _ in range(total)]
        with anyio.fail_after(10):
            await full.wait()
        await anyio.wait_all_tasks_blocked()
        stats = sup.stats()
        assert (stats.running, stats.pending) == (limit, total - limit)
        assert sum(t.state is TaskState.RUNNING for t in tasks) == limit
        assert sum(t.state is TaskState.PENDING for t in tasks) == total - limit
        assert all(t.started_at is None for t in tasks if t.state is TaskState.PENDING)
        release.set()
        with anyio.fail_after(10):
            await sup.wait_idle()
        assert sup.stats().succeeded == total
    assert gauge.peak == limit
    assert max(running_seen) <= limit


async def test_waiting_tasks_start_in_fifo_order() -> None:
    """Tasks queued behind max_concurrency start in the order they were spawned."""
    rounds, count = 6, 12
    for _ in range(rounds):
        order: list[int] = []
        release = anyio.Event()

        async def blocker(gate: anyio.Event = release) -> None:
            await gate.wait()

        async def record(i: int, into: list[int] = order) -> None:
            into.append(i)

        async with Supervisor(max_concurrency=1) as sup:
            await sup.spawn(blocker)
            for i in range(count):
                await sup.spawn(record, i)
            await anyio.wait_all_tasks_blocked()
            release.set()
            with anyio.fail_after(10):
                await sup.wait_idle()
        assert order == list(range(count))


async def test_fifo_order_with_sync_tasks_and_nowait() -> None:
    """FIFO holds for mixed spawn/spawn_nowait and sync/async tasks."""
    order: list[int] = []
    lock = threading.Lock()
    release = anyio.Event()

    async def blocker() -> None:
        await release.wait()

    async def record_async(i: int) -> None:
        order.append(i)

    def record_sync(i: int) -> None:
        with lock:
            order.append(i)

    count = 10
    async with Supervisor(max_concurrency=1) as sup:
        await sup.spawn(blocker)
        for i in range(count):
            func: Any = record_sync if i % 2 else record_async
            if i % 3:
                sup.spawn_nowait(func, i)
            else:
                await sup.spawn(func, i)
        await anyio.wait_all_tasks_blocked()
        release.set()
        with anyio.fail_after(10):
            await sup.wait_idle()
    assert order == list(range(count))


async def _fill(sup: Supervisor, release: anyio.Event, n: int) -> list[Any]:
    async def blocked() -> None:
        await release.wait()

    return [sup.spawn_nowait(blocked) for _ in range(n)]


async def test_spawn_nowait_raises_overloaded_and_leaves_no_trace() -> None:
    """When max_concurrency run and max_pending wait, spawn_nowait raises Overloaded."""
    release = anyio.Event()
    ran: list[str] = []

    async def extra() -> None:
        ran.append("extra")

    async with Supervisor(max_concurrency=2, max_pending=3) as sup:
        tasks = await _fill(sup, release, 5)
        await anyio.wait_all_tasks_blocked()
        before = sup.stats()
        assert (before.running, before.pending, before.spawned) == (2, 3, 5)
        ids_before = set(sup.tasks)
        with pytest.raises(Overloaded) as info:
            sup.spawn_nowait(extra)
        assert isinstance(info.value, SupervisorError)
        message = str(info.value)
        assert "max_pending=3" in message
        assert "await sup.spawn" in message
        with pytest.raises(Overloaded):
            sup.options(task_id="overflow").spawn_nowait(extra)
        assert sup.stats() == before
        assert set(sup.tasks) == ids_before
        assert sup.get("overflow") is None
        release.set()
        with anyio.fail_after(10):
            await sup.wait_idle()
        # The refused spawns left no slot behind: the full capacity is usable again.
        again = anyio.Event()
        refill = await _fill(sup, again, 5)
        with pytest.raises(Overloaded):
            sup.spawn_nowait(extra)
        again.set()
        with anyio.fail_after(10):
            await sup.wait_idle()
        stats = sup.stats()
        assert (stats.spawned, stats.succeeded, stats.pending, stats.running) == (
            10,
            10,
            0,
            0,
        )
    assert ran == []
    assert all(t.state is TaskState.SUCCEEDED for t in tasks + refill)


async def test_spawn_waits_for_room_then_succeeds() -> None:
    """When full, await spawn() waits until a task ends and then spawns."""
    release_one = anyio.Event()
    release_rest = anyio.Event()
    spawned: list[Any] = []
    returned = anyio.Event()

    async def first() -> None:
        await release_one.wait()

    async def rest() -> None:
        await release_rest.wait()

    async def late() -> str:
        return "late"

    async def spawner(sup: Supervisor) -> None:
        spawned.append(await sup.spawn(late))
        returned.set()

    async with Supervisor(max_concurrency=1, max_pending=2) as sup:
        await sup.spawn(first)
        await sup.spawn(rest)
        await sup.spawn(rest)
        async with anyio.create_task_group() as tg:
            tg.start_soon(spawner, sup)
            await anyio.wait_all_tasks_blocked()
            assert not returned.is_set()
            assert sup.stats().spawned == 3
            release_one.set()
            with anyio.fail_after(10):
                await returned.wait()
        assert sup.stats().spawned == 4
        assert spawned[0].state is TaskState.PENDING
        release_rest.set()
        with anyio.fail_after(10):
            assert await spawned[0].wait() == "late"
            await sup.wait_idle()
        assert sup.stats().succeeded == 4


async def test_spawn_threadsafe_raises_overloaded() -> None:
    """spawn_threadsafe raises Overloaded in the calling thread instead of waiting."""
    release = anyio.Event()

    async def extra() -> None:
        return None

    async with Supervisor(max_concurrency=1, max_pending=1) as sup:
        await _fill(sup, release, 2)
        await anyio.wait_all_tasks_blocked()
        before = sup.stats()
        ids_before = set(sup.tasks)
        with pytest.raises(Overloaded):
            await anyio.to_thread.run_sync(sup.spawn_threadsafe, extra)
        with pytest.raises(Overloaded):
            await anyio.to_thread.run_sync(
                sup.options(task_id="t").spawn_threadsafe, extra
            )
        assert sup.stats() == before
        assert set(sup.tasks) == ids_before
        release.set()
        with anyio.fail_after(10):
            await sup.wait_idle()
        task_id = await anyio.to_thread.run_sync(sup.spawn_threadsafe, extra)
        with anyio.fail_after(10):
            await sup.wait_idle()
        task = sup.get(task_id)
        assert task is not None
        assert task.state is TaskState.SUCCEEDED


async def test_thread_limit_bounds_sync_tasks_and_waiting_ones_are_pending() -> None:
    """No more than thread_limit sync tasks run at once; the others wait PENDING."""
    limit, total = 2, 7
    gauge = _Gauge()
    release = threading.Event()
    started = anyio.Event()
    starts: list[int] = []

    def on_start() -> None:
        starts.append(1)
        if len(starts) == limit:
            started.set()

    def body() -> None:
        gauge.enter()
        try:
            anyio.from_thread.run_sync(on_start)
            assert release.wait(timeout=20)
        finally:
            gauge.leave()

    try:
        async with Supervisor(thread_limit=limit) as sup:
            tasks = [await sup.spawn(body) for _ in range(total)]
            with anyio.fail_after(10):
                await started.wait()
            await anyio.wait_all_tasks_blocked()
            stats = sup.stats()
            assert (stats.running, stats.pending) == (limit, total - limit)
            waiting = [t for t in tasks if t.state is TaskState.PENDING]
            assert len(waiting) == total - limit
            assert all(t.started_at is None and t.attempts == 0 for t in waiting)
            assert gauge.now == limit
            release.set()
            with anyio.fail_after(20):
                await sup.wait_idle()
    finally:
        release.set()
    assert gauge.peak == limit
    assert all(t.state is TaskState.SUCCEEDED for t in tasks)


async def test_thread_wait_counts_against_max_pending() -> None:
    """A sync task waiting for a thread is PENDING and is admitted like any other."""
    release = threading.Event()
    entered = anyio.Event()

    def body() -> None:
        anyio.from_thread.run_sync(entered.set)
        assert release.wait(timeout=20)

    try:
        # Live tasks are bounded by max_concurrency + max_pending = 3.
        async with Supervisor(thread_limit=1, max_concurrency=2, max_pending=1) as sup:
            first = sup.spawn_nowait(body)
            with anyio.fail_after(10):
                await entered.wait()
            # Has a concurrency slot, but no thread: still PENDING.
            second = sup.spawn_nowait(body)
            third = sup.spawn_nowait(body)
            await anyio.wait_all_tasks_blocked()
            assert first.state is TaskState.RUNNING
            assert second.state is TaskState.PENDING
            assert second.started_at is None
            assert third.state is TaskState.PENDING
            assert (sup.stats().running, sup.stats().pending) == (1, 2)
            before = sup.stats()
            with pytest.raises(Overloaded):
                sup.spawn_nowait(body)
            assert sup.stats() == before
            release.set()
            with anyio.fail_after(20):
                await sup.wait_idle()
            assert sup.stats().succeeded == 3
    finally:
        release.set()


async def test_thread_limit_accepts_a_capacity_limiter() -> None:
    """thread_limit may be an anyio.CapacityLimiter, which the supervisor then uses."""
    limiter = anyio.CapacityLimiter(1)
    gauge = _Gauge()
    release = threading.Event()
    entered = anyio.Event()

    def body() -> None:
        gauge.enter()
        try:
            anyio.from_thread.run_sync(entered.set)
            assert release.wait(timeout=20)
        finally:
            gauge.leave()

    try:
        async with Supervisor(thread_limit=limiter) as sup:
            assert sup.thread_limit is limiter
            tasks = [sup.spawn_nowait(body) for _ in range(4)]
            with anyio.fail_after(10):
                await entered.wait()
            await anyio.wait_all_tasks_blocked()
            assert limiter.borrowed_tokens == 1
            assert sum(t.state is TaskState.RUNNING for t in tasks) == 1
            assert sum(t.state is TaskState.PENDING for t in tasks) == 3
            release.set()
            with anyio.fail_after(20):
                await sup.wait_idle()
    finally:
        release.set()
    assert gauge.peak == 1
    assert limiter.borrowed_tokens == 0
    assert all(t.state is TaskState.SUCCEEDED for t in tasks)


async def test_overloaded_spawn_keeps_a_finished_record_with_the_same_id() -> None:
    """A refused spawn that reuses a finished task's id leaves that record in place."""
    release = anyio.Event()

    async def quick() -> str:
        return "first"

    async with Supervisor(max_concurrency=1, max_pending=1) as sup:
        old = await sup.options(task_id="report").spawn(quick)
        with anyio.fail_after(10):
            await old.wait()
        await _fill(sup, release, 2)
        await anyio.wait_all_tasks_blocked()
        before = sup.stats()
        with pytest.raises(Overloaded):
            sup.options(task_id="report").spawn_nowait(quick)
        with pytest.raises(Overloaded):
            await anyio.to_thread.run_sync(
                sup.options(task_id="report").spawn_threadsafe, quick
            )
        assert sup.stats() == before
        assert sup.get("report") is old
        assert old.result == "first"
        release.set()
        with anyio.fail_after(10):
            await sup.wait_idle()


async def test_a_cancelled_waiting_spawn_leaves_no_trace() -> None:
    """A spawn() cancelled while waiting for room spawns nothing, keeps old records."""
    release = anyio.Event()

    async def quick() -> str:
        return "first"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with Supervisor(max_concurrency=1, max_pending=1) as sup:
            old = await sup.options(task_id="report").spawn(quick)
            with anyio.fail_after(10):
                await old.wait()
            await _fill(sup, release, 2)
            await anyio.wait_all_tasks_blocked()
            before = sup.stats()
            with anyio.CancelScope() as scope:
                scope.cancel()
                await sup.options(task_id="other").spawn(quick)
            assert scope.cancelled_caught
            assert sup.stats() == before
            assert sup.get("other") is None
            with anyio.CancelScope() as scope:
                scope.cancel()
                await sup.options(task_id="report").spawn(quick)
            assert sup.stats() == before
            assert sup.get("report") is old
            release.set()
            with anyio.fail_after(10):
                await sup.wait_idle()
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]
