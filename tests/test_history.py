"""Bounded history: up to ``history`` finished records, live ones always (SPEC 3).

A service that spawns millions of tasks must have a flat memory curve, so
the supervisor keeps only the last ``history`` finished records, while
``stats()`` totals keep counting everything. Task ids chosen with
``options(task_id=...)`` may be reused once their task has finished.
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import anyio
import pytest

from supervisor import Supervisor, SupervisorError, TaskState


class _NullLogger:
    """A logger that drops everything, so that log output does not skew memory."""

    def __getattr__(self, level: str) -> Any:
        return self._drop

    @staticmethod
    def _drop(*_args: Any, **_kwargs: Any) -> None:
        return None


async def _quick(i: int) -> int:
    return i


def _quick_sync(i: int) -> int:
    return i


async def test_history_keeps_only_the_newest_finished_records() -> None:
    """With history=3, only the last three finished tasks can be looked up."""
    async with Supervisor(history=3) as sup:
        tasks = []
        for i in range(6):
            func = _quick_sync if i % 2 else _quick
            task = await sup.spawn(func, i)
            with anyio.fail_after(10):
                assert await task.wait() == i
            tasks.append(task)
        assert [sup.get(t.task_id) for t in tasks[:3]] == [None, None, None]
        assert [sup.get(t.task_id) for t in tasks[3:]] == tasks[3:]
        assert list(sup.tasks) == [t.task_id for t in tasks[3:]]
        assert len(sup.tasks) == 3
        stats = sup.stats()
        assert (stats.spawned, stats.succeeded) == (6, 6)
    # A forgotten record is still a complete record for whoever holds it.
    assert tasks[0].state is TaskState.SUCCEEDED
    assert tasks[0].result == 0


async def test_live_tasks_stay_visible_whatever_the_history() -> None:
    """Live tasks are never evicted; only finished ones compete for history."""
    release = anyio.Event()

    async def blocked() -> str:
        await release.wait()
        return "live"

    async with Supervisor(history=1) as sup:
        live = [await sup.spawn(blocked) for _ in range(3)]
        done = []
        for i in range(4):  # one at a time, so that they finish in this order
            done.append(await sup.spawn(_quick, i))
            with anyio.fail_after(10):
                await done[-1].wait()
        for task in live:
            assert sup.get(task.task_id) is task
            assert task.task_id in sup.tasks
        assert [sup.get(t.task_id) for t in done] == [None, None, None, done[3]]
        assert len(sup.tasks) == 4
        release.set()
        with anyio.fail_after(10):
            await sup.wait_idle()
        # Now the live ones finished too, and only the newest one is kept.
        assert len(sup.tasks) == 1
        assert sum(sup.get(t.task_id) is not None for t in live) == 1


async def test_history_zero_keeps_no_finished_records() -> None:
    """history=0 forgets every finished task at once; stats still count them."""

    async def fail() -> None:
        raise ValueError("gone")

    async with Supervisor(history=0) as sup:
        ok = sup.spawn_nowait(_quick, 1)
        bad = sup.spawn_nowait(fail)
        assert sup.get(ok.task_id) is ok  # live: visible
        with anyio.fail_after(10):
            await sup.wait_idle()
        assert sup.get(ok.task_id) is None
        assert sup.get(bad.task_id) is None
        assert len(sup.tasks) == 0
        assert list(sup.tasks) == []
        # The caller's own reference still has the outcome.
        with anyio.fail_after(10):
            assert await ok.wait() == 1
        stats = sup.stats()
        assert (stats.spawned, stats.succeeded, stats.failed) == (2, 1, 1)
    assert isinstance(bad.error, ValueError)


async def test_stats_totals_are_never_reduced_by_eviction() -> None:
    """Eviction from history leaves succeeded/failed/cancelled totals intact."""

    async def fail() -> None:
        raise RuntimeError("x")

    async with Supervisor(history=2) as sup:
        for i in range(10):
            await sup.spawn(_quick, i)
            await sup.spawn(fail)
            pending = sup.spawn_nowait(_quick, i)
            pending.cancel()
        with anyio.fail_after(10):
            await sup.wait_idle()
        stats = sup.stats()
        assert (
            stats.spawned,
            stats.succeeded,
            stats.failed,
            stats.cancelled,
            stats.pending,
            stats.running,
        ) == (30, 10, 10, 10, 0, 0)
        assert len(sup.tasks) == 2


async def test_a_finished_tasks_id_can_be_reused() -> None:
    """options(task_id=...) may reuse a finished task's id; get() finds the new one."""
    async with Supervisor() as sup:
        first = await sup.options(task_id="nightly").spawn(_quick, 1)
        with anyio.fail_after(10):
            await first.wait()
        second = await sup.options(task_id="nightly").spawn(_quick, 2)
        assert second is not first
        assert sup.get("nightly") is second
        with anyio.fail_after(10):
            assert await second.wait() == 2
        third = sup.options(task_id="nightly").spawn_nowait(_quick_sync, 3)
        with anyio.fail_after(10):
            assert await third.wait() == 3
        assert sup.get("nightly") is third
        assert list(sup.tasks).count("nightly") == 1
        assert len(sup.tasks) == 1
        assert sup.stats().spawned == 3
    assert first.result == 1


async def test_a_live_tasks_id_cannot_be_reused() -> None:
    """Reusing the id of a live task raises SupervisorError and changes nothing."""
    release = anyio.Event()

    async def blocked() -> None:
        await release.wait()

    async with Supervisor() as sup:
        live = await sup.options(task_id="import-42").spawn(blocked)
        await anyio.wait_all_tasks_blocked()
        before = sup.stats()
        ids = dict(sup.tasks)
        with pytest.raises(SupervisorError) as info:
            await sup.options(task_id="import-42").spawn(_quick, 1)
        message = str(info.value)
        assert "import-42" in message
        assert "already used by a live task" in message
        assert "pick another id" in message
        with pytest.raises(SupervisorError):
            sup.options(task_id="import-42").spawn_nowait(_quick_sync, 1)
        assert sup.stats() == before
        assert dict(sup.tasks) == ids
        assert sup.get("import-42") is live
        release.set()
        with anyio.fail_after(10):
            await live.wait()
        # Finished now: the id is free again.
        again = await sup.options(task_id="import-42").spawn(_quick, 2)
        with anyio.fail_after(10):
            assert await again.wait() == 2


async def test_memory_stays_flat_as_tasks_accumulate() -> None:
    """Spawning 20k tasks with history=100 does not grow memory with the count."""
    batches, per_batch = 10, 2000
    measured: dict[int, int] = {}
    tracemalloc.start()
    try:
        async with Supervisor(history=100, logger=_NullLogger()) as sup:
            for batch in range(1, batches + 1):
                for i in range(per_batch):
                    sup.spawn_nowait(_quick, i)
                with anyio.fail_after(30):
                    await sup.wait_idle()
                if batch in (2, batches):
                    gc.collect()
                    measured[batch] = tracemalloc.get_traced_memory()[0]
            stats = sup.stats()
            assert stats.spawned == stats.succeeded == batches * per_batch
            assert len(sup.tasks) == 100
    finally:
        tracemalloc.stop()
    growth = measured[batches] - measured[2]
    assert growth < 1024 * 1024, f"memory grew by {growth} bytes over 16k tasks"
