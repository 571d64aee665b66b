"""supervisor.testing.capture_events: every event, from supervisors started anywhere."""

from __future__ import annotations

import contextlib
from typing import Any

import anyio

from supervisor import Retry, Supervisor, TaskState
from supervisor.testing import capture_events

DATA_KEYS = {"event", "task_id", "name", "supervisor", "attempt", "state"}


async def _ok() -> str:
    return "ok"


async def _fail() -> None:
    raise ValueError("bad value")


def _sync_ok() -> int:
    return 7


def names(events: list[dict[str, Any]], task_id: str) -> list[str]:
    return [e["event"] for e in events if e["task_id"] == task_id]


async def test_supervisor_started_inside_the_block() -> None:
    """Events of a supervisor created and started in the block are recorded in order."""
    with capture_events() as events:
        async with Supervisor(name="inside") as sup:
            ok = await sup.spawn(_ok)
            failed = await sup.options(name="failing").spawn(_fail)
            threaded = await sup.spawn(_sync_ok)
            await sup.wait_idle()
    assert names(events, ok.task_id) == ["task:started", "task:succeeded"]
    assert names(events, failed.task_id) == ["task:started", "task:failed"]
    assert names(events, threaded.task_id) == ["task:started", "task:succeeded"]
    assert all(set(e) >= DATA_KEYS for e in events)
    failure = next(e for e in events if e["event"] == "task:failed")
    assert failure == {
        "event": "task:failed",
        "task_id": failed.task_id,
        "name": "failing",
        "supervisor": "inside",
        "attempt": 1,
        "state": "failed",
        "error": "bad value",
        "error_type": "ValueError",
    }


async def test_supervisor_started_before_the_block() -> None:
    """A supervisor already running is tapped at once, and untapped at the end."""
    async with Supervisor(name="outside") as sup:
        before = await sup.spawn(_ok)
        await sup.wait_idle()
        with capture_events() as events:
            during = await sup.spawn(_ok)
            await sup.wait_idle()
        after = await sup.spawn(_fail)
        await sup.wait_idle()
    assert names(events, during.task_id) == ["task:started", "task:succeeded"]
    assert names(events, before.task_id) == []
    assert names(events, after.task_id) == []
    assert after.state is TaskState.FAILED


async def test_own_handler_still_receives_every_event() -> None:
    """The supervisor's on_event handler, async here, still gets every event."""
    seen: list[str] = []

    async def handler(name: str, data: dict[str, Any]) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(name)

    async with Supervisor(name="handled", on_event=handler) as sup:
        with capture_events() as events:
            task = await sup.spawn(_fail)
            await sup.wait_idle()
        assert [e["event"] for e in events] == ["task:started", "task:failed"]
        assert seen == ["task:started", "task:failed"]
        later = await sup.spawn(_ok)
        await sup.wait_idle()
    assert task.state is TaskState.FAILED
    assert later.state is TaskState.SUCCEEDED
    assert seen == ["task:started", "task:failed", "task:started", "task:succeeded"]


async def test_retries_and_cancellations_are_recorded() -> None:
    """task:retrying and task:cancelled (with its reason) show up too."""
    attempts = 0
    entered = anyio.Event()

    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise OSError("try again")
        return "third time"

    async def forever() -> None:
        entered.set()
        await anyio.sleep_forever()

    with capture_events() as events:
        async with Supervisor(name="retries") as sup:
            retried = await sup.options(
                retry=Retry(attempts=3, on=OSError, initial=0.001, maximum=0.001)
            ).spawn(flaky)
            sleeper = await sup.spawn(forever)
            with anyio.fail_after(10):
                await entered.wait()
            sleeper.cancel("enough")
            await sup.wait_idle()
    assert names(events, retried.task_id) == [
        "task:started",
        "task:retrying",
        "task:retrying",
        "task:succeeded",
    ]
    cancelled = [e for e in events if e["task_id"] == sleeper.task_id]
    assert [e["event"] for e in cancelled] == ["task:started", "task:cancelled"]
    assert cancelled[-1]["reason"] == "enough"


async def test_nested_and_overlapping_captures() -> None:
    """Each capture sees exactly the events emitted while it is open."""
    async with Supervisor(name="nested") as sup:
        with capture_events() as outer:
            first = await sup.spawn(_ok)
            await sup.wait_idle()
            with capture_events() as inner:
                second = await sup.spawn(_ok)
                await sup.wait_idle()
            third = await sup.spawn(_ok)
            await sup.wait_idle()
        # Overlapping, closed out of order.
        with contextlib.ExitStack() as stack:
            a = stack.enter_context(capture_events())
            b_manager = capture_events()
            b = b_manager.__enter__()
            stack.close()  # closes a, b stays open
            fourth = await sup.spawn(_ok)
            await sup.wait_idle()
            b_manager.__exit__(None, None, None)
    assert {e["task_id"] for e in outer} == {
        first.task_id,
        second.task_id,
        third.task_id,
    }
    assert {e["task_id"] for e in inner} == {second.task_id}
    assert a == []
    assert {e["task_id"] for e in b} == {fourth.task_id}


async def test_events_after_the_last_capture_are_not_recorded() -> None:
    """Once every capture is closed, a supervisor started later is not tapped."""
    with capture_events() as events:
        pass
    async with Supervisor(name="later") as sup:
        await sup.spawn(_ok)
        await sup.wait_idle()
    assert events == []


def test_capture_is_sync_and_works_without_a_loop(
    anyio_backend_name: str, anyio_backend_options: dict[str, Any]
) -> None:
    """The context manager needs no event loop: events come from anyio.run inside."""

    async def main() -> str:
        async with Supervisor(name="script") as sup:
            task = await sup.spawn(_ok)
            return str(task.task_id)

    with capture_events() as events:
        task_id = anyio.run(
            main, backend=anyio_backend_name, backend_options=anyio_backend_options
        )
    assert names(events, task_id) == ["task:started", "task:succeeded"]
