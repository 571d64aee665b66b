"""Cancellation that does not come from the supervisor is recorded, not swallowed."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from supervisor import Supervisor, TaskState


async def test_native_asyncio_cancel_is_recorded_and_still_propagates(
    anyio_backend_name: str,
) -> None:
    """An asyncio Task cancelled by someone else ends CANCELLED and stays cancelled."""
    if anyio_backend_name != "asyncio":
        pytest.skip("asyncio.Task.cancel() exists only on asyncio; see the trio case")
    natives: list[asyncio.Task[object]] = []

    async def victim() -> None:
        native = asyncio.current_task()
        assert native is not None
        natives.append(native)
        native.cancel("someone else's cancel")
        await asyncio.sleep(0)

    async with Supervisor("app") as sup:
        task = await sup.spawn(victim)
        await sup.wait_idle()
    assert task.state is TaskState.CANCELLED
    assert task.cancel_reason == "cancelled from outside the supervisor"
    # Not swallowed: the native task itself ended cancelled.
    assert natives[0].cancelled()


async def test_host_cancellation_reaches_tasks_with_its_own_reason() -> None:
    """A host scope cancelled around the supervisor ends its tasks CANCELLED."""
    started = anyio.Event()

    async def forever() -> None:
        started.set()
        await anyio.sleep_forever()

    with anyio.CancelScope() as outer:
        async with Supervisor("app", shutdown_timeout=60) as sup:
            task = await sup.spawn(forever)
            await started.wait()
            outer.cancel()
            await anyio.sleep_forever()
    assert task.state is TaskState.CANCELLED
    assert task.cancel_reason in {"shutdown", "cancelled from outside the supervisor"}
    assert sup.closed
    stats = sup.stats()
    assert (stats.spawned, stats.cancelled, stats.running) == (1, 1, 0)


async def test_cancel_waits_for_the_tasks_own_shield_then_lands() -> None:
    """cancel() during a task's own shielded section: the section finishes first.

    On trio a cancelled scope cannot reach into a shielded one; on asyncio a
    bare ``Task.cancel()`` would, so the supervisor holds the cancellation
    until the task has left its anyio shield. Either way it lands at the next
    checkpoint after the shield, and the task ends CANCELLED once.
    """
    in_shield = anyio.Event()
    release = anyio.Event()
    steps: list[str] = []

    async def saves_then_waits() -> None:
        with anyio.CancelScope(shield=True):
            in_shield.set()
            await release.wait()
            steps.append("saved")
        steps.append("after shield")
        await anyio.sleep_forever()
        steps.append("unreachable")

    async with Supervisor("app") as sup:
        task = await sup.spawn(saves_then_waits)
        await in_shield.wait()
        assert task.cancel("user asked")
        for _ in range(20):  # the cancellation gets many chances to pierce
            await anyio.sleep(0.005)
        assert task.state is TaskState.RUNNING
        assert steps == []
        release.set()
        with anyio.fail_after(10):
            await task.wait_done()
    assert steps == ["saved", "after shield"]
    assert task.state is TaskState.CANCELLED
    assert task.cancel_reason == "user asked"
    stats = sup.stats()
    assert (stats.spawned, stats.cancelled, stats.running) == (1, 1, 0)
