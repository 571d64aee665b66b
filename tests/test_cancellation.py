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
