"""BaseExceptions that are not cancellation: recorded, then they stop the supervisor."""

from __future__ import annotations

import anyio
import pytest
from structlog.testing import capture_logs

from supervisor import Supervisor, SupervisorClosed, TaskState
from supervisor.testing import capture_events


def _flatten(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _flatten(inner)]
    return [exc]


async def test_keyboard_interrupt_fails_task_cancels_siblings_and_propagates() -> None:
    """Like trio: the task is FAILED and logged, siblings cancelled, error raised."""
    sibling_started = anyio.Event()

    async def sibling() -> None:
        sibling_started.set()
        await anyio.sleep_forever()

    async def interrupt() -> None:
        await sibling_started.wait()
        raise KeyboardInterrupt

    body_finished = False
    with (
        capture_logs() as logs,
        capture_events() as events,
        pytest.raises(BaseException) as info,  # noqa: PT011
    ):
        async with Supervisor("app") as sup:
            other = await sup.spawn(sibling)
            bad = await sup.spawn(interrupt)
            await anyio.sleep_forever()  # the supervisor cancels the body
            body_finished = True
    assert not body_finished
    assert any(isinstance(e, KeyboardInterrupt) for e in _flatten(info.value))
    assert bad.state is TaskState.FAILED
    assert isinstance(bad.error, KeyboardInterrupt)
    assert other.state is TaskState.CANCELLED
    assert other.cancel_reason is not None
    assert "KeyboardInterrupt" in other.cancel_reason
    (line,) = [entry for entry in logs if entry["event"] == "task:failed"]
    assert line["error_type"] == "KeyboardInterrupt"
    assert line["log_level"] == "error"
    assert ("task:failed", bad.task_id) in [(e["event"], e["task_id"]) for e in events]
    stats = sup.stats()
    assert (stats.failed, stats.cancelled, stats.spawned) == (1, 1, 2)


async def test_hook_form_keeps_host_running_and_raises_from_shutdown() -> None:
    """In hook form the host task is not cancelled; shutdown() re-raises the error."""
    sup = Supervisor("app")
    await sup.startup()

    async def exit_task() -> None:
        raise SystemExit(3)

    task = await sup.spawn(exit_task)
    with anyio.fail_after(10):
        await task.wait_done()
    assert task.state is TaskState.FAILED
    # The host keeps running normally; new spawns are refused.
    await anyio.sleep(0.01)
    with pytest.raises(SupervisorClosed, match=r"exit_task' raised SystemExit"):
        await sup.spawn(anyio.sleep, 0)
    with pytest.raises(SystemExit) as info:
        await sup.shutdown()
    assert info.value.code == 3
    assert sup.closed
    assert await sup.shutdown() is not None  # idempotent afterwards


async def test_shielded_task_survives_a_fatal_error() -> None:
    """A shielded task is not cancelled when another task raises KeyboardInterrupt."""
    release = anyio.Event()

    async def precious() -> str:
        await release.wait()
        return "kept"

    async def interrupt() -> None:
        raise KeyboardInterrupt

    sup = Supervisor("app")
    await sup.startup()
    keep = await sup.options(shield=True).spawn(precious)
    bad = await sup.spawn(interrupt)
    with anyio.fail_after(10):
        await bad.wait_done()
    assert keep.state is TaskState.RUNNING
    release.set()
    with pytest.raises(KeyboardInterrupt):
        await sup.shutdown()
    assert keep.state is TaskState.SUCCEEDED
