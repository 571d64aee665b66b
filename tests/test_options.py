"""Per-task options: timeout, retry with backoff, shield, name and id."""

from __future__ import annotations

import itertools
import threading
import traceback
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from supervisor import (
    Retry,
    Supervisor,
    TaskEvent,
    TaskFailed,
    TaskOptions,
    TaskState,
)
from supervisor.testing import capture_events


def names(events: list[dict[str, Any]]) -> list[str]:
    return [event["event"] for event in events]


async def test_timeout_fails_async_task_with_timeout_error() -> None:
    """An async task past its timeout is cancelled and recorded FAILED(TimeoutError)."""
    with capture_logs() as logs, capture_events() as events:
        async with Supervisor("app") as sup:
            task = await sup.options(timeout=0.05).spawn(anyio.sleep_forever)
            with pytest.raises(TaskFailed) as info:
                await task.wait()
    assert isinstance(info.value.__cause__, TimeoutError)
    assert task.state is TaskState.FAILED
    assert isinstance(task.error, TimeoutError)
    assert "0.05 s timeout" in str(task.error)
    assert names(events) == ["task:started", "task:failed"]
    assert events[-1]["error_type"] == "TimeoutError"
    (line,) = [entry for entry in logs if entry["event"] == "task:failed"]
    assert line["error_type"] == "TimeoutError"


async def test_timeout_fails_sync_task_without_waiting_for_its_thread() -> None:
    """A sync task past its timeout fails; its thread is left to finish alone."""
    release = threading.Event()
    try:
        async with Supervisor("app") as sup:
            task = await sup.options(timeout=0.05).spawn(release.wait, 30)
            with pytest.raises(TaskFailed):
                await task.wait()
            assert isinstance(task.error, TimeoutError)
    finally:
        release.set()


async def test_timeout_does_not_touch_tasks_that_finish_in_time() -> None:
    """A task well within its timeout succeeds normally."""
    async with Supervisor("app") as sup:
        task = await sup.options(timeout=30).spawn(anyio.sleep, 0)
        assert await task.wait() is None
        assert task.state is TaskState.SUCCEEDED


async def test_retry_until_success_goes_running_pending_running() -> None:
    """Retried attempts emit task:retrying and pass through PENDING."""
    calls: list[int] = []
    states: list[TaskState] = []

    async def flaky() -> str:
        calls.append(len(calls) + 1)
        if len(calls) < 3:
            raise ConnectionError(f"attempt {len(calls)}")
        return "ok"

    def watch(name: str, data: dict[str, Any]) -> None:
        states.append(sup.get(data["task_id"]).state)  # type: ignore[union-attr]

    with capture_logs() as logs, capture_events() as events:
        async with Supervisor("app", on_event=watch) as sup:
            retry = Retry(attempts=5, on=ConnectionError, initial=0.001, maximum=0.01)
            task = await sup.options(retry=retry).spawn(flaky)
            assert await task.wait() == "ok"
    assert calls == [1, 2, 3]
    assert task.attempts == 3
    assert names(events) == [
        "task:started",
        "task:retrying",
        "task:retrying",
        "task:succeeded",
    ]
    assert states == [
        TaskState.RUNNING,
        TaskState.PENDING,
        TaskState.PENDING,
        TaskState.SUCCEEDED,
    ]
    retrying = [event for event in events if event["event"] == "task:retrying"]
    assert [data["attempt"] for data in retrying] == [1, 2]
    assert retrying[0]["error"] == "attempt 1"
    assert retrying[0]["error_type"] == "ConnectionError"
    retry_lines = [e for e in logs if e["event"] == "task:retrying"]
    assert [e["log_level"] for e in retry_lines] == ["warning", "warning"]
    assert not [e for e in retry_lines if "exc_info" in e]  # one per failure


async def test_a_retry_event_carries_the_tasks_own_frames() -> None:
    """A listener's TaskEvent.error starts at the task's frame, not the runner's."""
    errors: list[BaseException] = []

    async def flaky() -> None:
        raise ConnectionError("down")

    def listen(event: TaskEvent) -> None:
        if event.error is not None:
            errors.append(event.error)

    async with Supervisor("app") as sup:
        sup.add_listener(listen)
        retry = Retry(attempts=2, on=ConnectionError, initial=0, jitter=0)
        task = await sup.options(retry=retry).spawn(flaky)
        await task.wait_done()
    assert len(errors) == 2  # task:retrying, then task:failed
    for error in errors:
        frames = traceback.extract_tb(error.__traceback__)
        assert [frame.name for frame in frames] == ["flaky"], frames


async def test_retry_exhausted_fails_with_last_error() -> None:
    """After the last attempt the task fails once, with task:failed."""

    async def always() -> None:
        raise ConnectionError("down")

    with capture_events() as events:
        async with Supervisor("app") as sup:
            retry = Retry(attempts=3, on=ConnectionError, initial=0, jitter=0)
            task = await sup.options(retry=retry).spawn(always)
            with pytest.raises(TaskFailed):
                await task.wait()
    assert task.attempts == 3
    assert names(events).count("task:retrying") == 2
    assert names(events)[-1] == "task:failed"
    assert events[-1]["attempt"] == 3
    assert sup.stats().failed == 1


@pytest.mark.virtual_time
async def test_retry_schedule_with_timeouts_runs_on_time(
    seconds: float, virtual_clock: bool
) -> None:
    """Attempts time out after 30 s and retry after 1, 2, 4 s (exact when virtual)."""
    starts: list[float] = []

    async def hangs() -> None:
        starts.append(anyio.current_time())
        await anyio.sleep_forever()

    retry = Retry(
        attempts=4,
        on=TimeoutError,
        initial=seconds,
        multiplier=2,
        maximum=60 * seconds,
        jitter=0,
    )
    with capture_events() as events:
        async with Supervisor("app") as sup:
            task = await sup.options(timeout=30 * seconds, retry=retry).spawn(hangs)
            with anyio.fail_after(1000 * seconds), pytest.raises(TaskFailed):
                await task.wait()
    assert task.attempts == 4
    assert isinstance(task.error, TimeoutError)
    assert names(events) == ["task:started"] + ["task:retrying"] * 3 + ["task:failed"]
    assert [e["retry_in_s"] for e in events if e["event"] == "task:retrying"] == [
        pytest.approx(seconds),
        pytest.approx(2 * seconds),
        pytest.approx(4 * seconds),
    ]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    if virtual_clock:  # each gap is one timeout plus one backoff, nothing else
        assert gaps == [pytest.approx(31), pytest.approx(32), pytest.approx(34)]
    else:
        assert all(gap >= 30 * seconds for gap in gaps)


async def test_retry_ignores_other_exceptions() -> None:
    """Only the chosen exception types are retried."""

    async def wrong() -> None:
        raise KeyError("not retried")

    async with Supervisor("app") as sup:
        retry = Retry(attempts=5, on=ConnectionError, initial=0)
        task = await sup.options(retry=retry).spawn(wrong)
        with pytest.raises(TaskFailed):
            await task.wait()
    assert task.attempts == 1


async def test_retry_for_sync_tasks_calls_again() -> None:
    """Sync tasks are retried too, each attempt in a worker thread."""
    calls: list[int] = []

    def flaky() -> int:
        calls.append(1)
        if len(calls) < 2:
            raise OSError("once")
        return len(calls)

    async with Supervisor("app") as sup:
        task = await sup.options(retry=Retry(attempts=2, on=OSError, initial=0)).spawn(
            flaky
        )
        assert await task.wait() == 2


def test_retry_delay_grows_and_is_capped() -> None:
    """Backoff is exponential, capped at maximum, and jitter only shortens it."""
    retry = Retry(initial=1, multiplier=2, maximum=5, jitter=0)
    assert [retry.delay(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 5]
    jittered = Retry(initial=1, multiplier=2, maximum=5, jitter=1)
    assert all(0 <= jittered.delay(3) <= 4 for _ in range(50))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attempts": 0}, "attempts"),
        ({"initial": -1}, "initial"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"jitter": 2}, "jitter"),
    ],
)
def test_retry_rejects_bad_values(kwargs: dict[str, Any], message: str) -> None:
    """Bad Retry settings fail at construction with the field named."""
    with pytest.raises(ValueError, match=message):
        Retry(**kwargs)


def test_retry_rejects_non_exception_classes() -> None:
    """Retry(on=...) takes exception classes only."""
    with pytest.raises(TypeError, match="exception class"):
        Retry(on=(ValueError, "nope"))  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [0, -1, float("nan")])
def test_options_reject_non_positive_timeouts(timeout: float) -> None:
    """A zero, negative or NaN timeout is a ValueError naming the fix."""
    with pytest.raises(ValueError, match="positive number of seconds"):
        TaskOptions(timeout=timeout)


def test_options_reject_bad_names_and_ids() -> None:
    """Names and ids must be strings; retry must be a Retry."""
    with pytest.raises(TypeError, match="name"):
        TaskOptions(name=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="task_id"):
        TaskOptions(task_id="")
    with pytest.raises(TypeError, match="Retry"):
        TaskOptions(retry=3)  # type: ignore[arg-type]


async def test_options_never_collide_with_function_keywords() -> None:
    """Keywords named like options go to the function; options go via options()."""
    seen: dict[str, Any] = {}

    async def job(**kwargs: Any) -> None:
        seen.update(kwargs)

    async with Supervisor("app") as sup:
        task = await sup.options(name="job-1", task_id="fixed").spawn(
            job, name="n", timeout=1, retry=2, shield=3, task_id=4
        )
        await task.wait()
    assert seen == {"name": "n", "timeout": 1, "retry": 2, "shield": 3, "task_id": 4}
    assert (task.name, task.task_id) == ("job-1", "fixed")


async def test_spawner_forms_share_the_options() -> None:
    """options() works with spawn, spawn_nowait and spawn_threadsafe alike."""
    async with Supervisor("app") as sup:
        spawner = sup.options(name="named")
        a = await spawner.spawn(anyio.sleep, 0)
        b = spawner.spawn_nowait(anyio.sleep, 0)
        c_id = await anyio.to_thread.run_sync(spawner.spawn_threadsafe, sum, [1, 2])
        c = sup.get(c_id)
        assert c is not None
        assert await c.wait() == 3
    assert {a.name, b.name, c.name} == {"named"}
