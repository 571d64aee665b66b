"""Spawning: arguments, states, timestamps, outcomes, threads, names, lookup and cancel.

SPEC 2 and 3: ``spawn(func, *args, **kwargs)`` passes every argument to
``func`` unchanged (options go through ``sup.options``); a task is PENDING
right after spawn, RUNNING while its body runs, then reaches exactly one
terminal state; its exception never reaches the spawner or its siblings.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from datetime import UTC, timedelta
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import pytest
import structlog

from supervisor import (
    BackgroundTask,
    Supervisor,
    TaskCancelled,
    TaskFailed,
    TaskState,
)

# Keyword names that a naive spawn(..., name=..., timeout=...) API would steal.
OPTION_LIKE: dict[str, Any] = {
    "name": "n",
    "timeout": 1.5,
    "task_id": "tid",
    "retry": "r",
    "shield": True,
    "wait": False,
    "func": "f",
    "self": "s",
}

MODES = ["spawn", "spawn_nowait", "spawn_threadsafe", "options"]


class Events:
    """An ``on_event`` handler that keeps every event for later assertions."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, name: str, data: dict[str, Any]) -> None:
        self.seen.append((name, dict(data)))

    def for_task(self, task_id: str) -> list[tuple[str, dict[str, Any]]]:
        return [(n, d) for n, d in self.seen if d["task_id"] == task_id]


def _state(task: BackgroundTask[Any]) -> TaskState:
    """Read the state afresh (it changes behind mypy's narrowing)."""
    return task.state


async def _spawn_via(
    sup: Supervisor, mode: str, func: Callable[..., Any], /, *args: Any, **kwargs: Any
) -> BackgroundTask[Any]:
    """Spawn through one of the public entry points and return the record."""
    if mode == "spawn":
        return await sup.spawn(func, *args, **kwargs)
    if mode == "spawn_nowait":
        return sup.spawn_nowait(func, *args, **kwargs)
    if mode == "options":
        return await sup.options(name="opt").spawn(func, *args, **kwargs)
    task_id = await anyio.to_thread.run_sync(
        functools.partial(sup.spawn_threadsafe, func, *args, **kwargs)
    )
    task = sup.get(task_id)
    assert task is not None
    return task


async def _async_echo(
    *args: Any, **kwargs: Any
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return args, kwargs


def _sync_echo(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return args, kwargs


async def _async_named(
    a: int, *, name: str, timeout: float, task_id: str, retry: str, shield: bool,
    wait: bool, func: str, self: str,
) -> dict[str, Any]:  # fmt: skip
    return {
        "a": a, "name": name, "timeout": timeout, "task_id": task_id, "retry": retry,
        "shield": shield, "wait": wait, "func": func, "self": self,
    }  # fmt: skip


def _sync_named(
    a: int, *, name: str, timeout: float, task_id: str, retry: str, shield: bool,
    wait: bool, func: str, self: str,
) -> dict[str, Any]:  # fmt: skip
    return {
        "a": a, "name": name, "timeout": timeout, "task_id": task_id, "retry": retry,
        "shield": shield, "wait": wait, "func": func, "self": self,
    }  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("func", [_async_echo, _sync_echo], ids=["async", "sync"])
async def test_arguments_reach_the_function_unchanged(
    mode: str, func: Callable[..., Any]
) -> None:
    """Positional and option-looking keyword arguments all go to the function."""
    marker = object()
    async with Supervisor() as sup:
        task = await _spawn_via(sup, mode, func, 1, "two", marker, **OPTION_LIKE)
        with anyio.fail_after(10):
            args, kwargs = await task.wait()
    assert args == (1, "two", marker)
    assert args[2] is marker
    assert kwargs == OPTION_LIKE
    # Options were not taken from the function's keywords.
    assert task.task_id != "tid"
    assert task.name != "n"
    assert task.options.timeout is None
    assert task.options.shield is False


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("func", [_async_named, _sync_named], ids=["async", "sync"])
async def test_option_named_parameters_bind_by_name(
    mode: str, func: Callable[..., Any]
) -> None:
    """A function whose own parameters are called name/timeout/... gets them."""
    async with Supervisor() as sup:
        task = await _spawn_via(sup, mode, func, 7, **OPTION_LIKE)
        with anyio.fail_after(10):
            result = await task.wait()
    assert result == {"a": 7, **OPTION_LIKE}


async def test_async_task_goes_pending_running_succeeded() -> None:
    """An async task is PENDING after spawn, RUNNING in its body, then SUCCEEDED."""
    entered = anyio.Event()
    release = anyio.Event()
    seen_inside: list[TaskState] = []
    holder: list[BackgroundTask[Any]] = []

    async def body() -> str:
        seen_inside.append(holder[0].state)
        entered.set()
        await release.wait()
        return "done"

    async with Supervisor() as sup:
        task = await sup.spawn(body)
        holder.append(task)
        assert _state(task) is TaskState.PENDING
        assert (task.started_at, task.completed_at, task.attempts) == (None, None, 0)
        assert sup.stats().pending == 1
        with anyio.fail_after(10):
            await entered.wait()
        assert seen_inside == [TaskState.RUNNING]
        assert _state(task) is TaskState.RUNNING
        assert task.started_at is not None
        assert task.completed_at is None
        assert sup.stats().running == 1
        release.set()
        with anyio.fail_after(10):
            assert await task.wait() == "done"
        assert _state(task) is TaskState.SUCCEEDED
        assert task.result == "done"
        assert task.error is None
        assert task.attempts == 1
    _check_timestamps(task)


async def test_sync_task_goes_pending_running_succeeded() -> None:
    """A sync task is PENDING after spawn, RUNNING in its thread, then SUCCEEDED."""
    entered = anyio.Event()
    release = anyio.Event()
    seen_inside: list[TaskState] = []
    holder: list[BackgroundTask[Any]] = []

    def body() -> int:
        seen_inside.append(holder[0].state)
        anyio.from_thread.run_sync(entered.set)
        anyio.from_thread.run(release.wait)
        return 42

    async with Supervisor() as sup:
        task = sup.spawn_nowait(body)
        holder.append(task)
        assert _state(task) is TaskState.PENDING
        assert (task.started_at, task.attempts) == (None, 0)
        with anyio.fail_after(10):
            await entered.wait()
        assert seen_inside == [TaskState.RUNNING]
        assert _state(task) is TaskState.RUNNING
        assert task.started_at is not None
        release.set()
        with anyio.fail_after(10):
            assert await task.wait() == 42
        assert _state(task) is TaskState.SUCCEEDED
        assert task.attempts == 1
    _check_timestamps(task)


def _check_timestamps(task: BackgroundTask[Any]) -> None:
    """created <= started <= completed, all aware UTC."""
    created, started, completed = task.created_at, task.started_at, task.completed_at
    assert started is not None
    assert completed is not None
    for stamp in (created, started, completed):
        assert stamp.tzinfo is not None
        assert stamp.utcoffset() == timedelta(0)
        assert stamp.tzinfo == UTC
    assert created <= started <= completed
    assert task.duration_s is not None
    assert task.duration_s >= 0


async def test_wait_raises_task_failed_with_the_original_error_as_cause() -> None:
    """wait() on a failed task raises TaskFailed whose __cause__ is the error."""
    boom = ValueError("boom")

    async def fail() -> None:
        raise boom

    async with Supervisor() as sup:
        task = await sup.spawn(fail)
        with anyio.fail_after(10), pytest.raises(TaskFailed) as info:
            await task.wait()
        assert info.value.__cause__ is boom
        assert "boom" in str(info.value)
        assert "ValueError" in str(info.value)
        assert _state(task) is TaskState.FAILED
        assert task.error is boom
        assert task.result is None
        assert task.attempts == 1
        # A second wait on the finished task gives the same outcome.
        with pytest.raises(TaskFailed) as again:
            await task.wait()
        assert again.value.__cause__ is boom
    _check_timestamps(task)


async def test_wait_raises_task_cancelled_after_cancel() -> None:
    """wait() on a task cancelled with task.cancel() raises TaskCancelled."""
    entered = anyio.Event()

    async def forever() -> None:
        entered.set()
        await anyio.sleep_forever()

    async with Supervisor() as sup:
        task = await sup.spawn(forever)
        with anyio.fail_after(10):
            await entered.wait()
        assert task.cancel("no longer needed") is True
        with anyio.fail_after(10), pytest.raises(TaskCancelled) as info:
            await task.wait()
        assert "no longer needed" in str(info.value)
        assert _state(task) is TaskState.CANCELLED
        assert task.cancel_reason == "no longer needed"
        assert sup.stats().cancelled == 1


async def test_a_failure_never_reaches_the_spawner_or_siblings() -> None:
    """A task's exception is recorded on it; the spawner and siblings carry on."""
    sibling_entered = anyio.Event()
    sibling_release = anyio.Event()

    async def sibling() -> str:
        sibling_entered.set()
        await sibling_release.wait()
        return "sibling ok"

    async def fail() -> None:
        raise RuntimeError("only mine")

    def sync_fail() -> None:
        raise KeyError("only mine too")

    async with Supervisor() as sup:
        brother = await sup.spawn(sibling)
        with anyio.fail_after(10):
            await sibling_entered.wait()
        failing = [await sup.spawn(fail), await sup.spawn(sync_fail)]
        with anyio.fail_after(10):
            for task in failing:
                with pytest.raises(TaskFailed):
                    await task.wait()
        # The spawner is still here, not cancelled, and the sibling runs on.
        await anyio.lowlevel.checkpoint()
        assert brother.state is TaskState.RUNNING
        sibling_release.set()
        with anyio.fail_after(10):
            assert await brother.wait() == "sibling ok"
        stats = sup.stats()
        assert (stats.succeeded, stats.failed, stats.cancelled) == (1, 2, 0)
    assert isinstance(failing[0].error, RuntimeError)
    assert isinstance(failing[1].error, KeyError)


async def test_sync_functions_run_in_a_worker_thread() -> None:
    """A plain function runs off the event loop thread; its outcome is recorded."""
    loop_thread = threading.get_ident()

    def where() -> int:
        return threading.get_ident()

    def fail() -> None:
        raise OSError("disk full")

    async def where_async() -> int:
        return threading.get_ident()

    async with Supervisor() as sup:
        sync_task = await sup.spawn(where)
        failed = await sup.spawn(fail)
        async_task = await sup.spawn(where_async)
        with anyio.fail_after(10):
            await sup.wait_idle()
    assert sync_task.state is TaskState.SUCCEEDED
    assert sync_task.result != loop_thread
    assert failed.state is TaskState.FAILED
    assert isinstance(failed.error, OSError)
    assert str(failed.error) == "disk full"
    assert async_task.result == loop_thread


class _AsyncCallable:
    """An object whose ``__call__`` is ``async def``."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def __call__(self, *args: Any) -> int:
        self.calls.append(args)
        await anyio.lowlevel.checkpoint()
        return threading.get_ident()


async def _add(a: int, b: int) -> tuple[int, int]:
    await anyio.lowlevel.checkpoint()
    return a + b, threading.get_ident()


async def test_async_callable_objects_and_partials_run_as_async() -> None:
    """Instances with async __call__ and partials of async functions are awaited."""
    loop_thread = threading.get_ident()
    obj = _AsyncCallable()
    async with Supervisor() as sup:
        by_obj = await sup.spawn(obj, "x", 1)
        by_partial = await sup.spawn(functools.partial(_add, 40), 2)
        with anyio.fail_after(10):
            assert await by_obj.wait() == loop_thread
            assert await by_partial.wait() == (42, loop_thread)
    assert obj.calls == [("x", 1)]
    assert by_obj.name == "_AsyncCallable"
    assert by_partial.name == "_add"


async def test_options_set_name_and_task_id() -> None:
    """sup.options(name=..., task_id=...) names the task and fixes its id."""

    async def work() -> int:
        return 1

    async with Supervisor() as sup:
        task = await sup.options(name="welcome-email", task_id="job-1").spawn(work)
        nowait = sup.options(task_id="job-2").spawn_nowait(work)
        with anyio.fail_after(10):
            await sup.wait_idle()
        assert task.name == "welcome-email"
        assert task.task_id == "job-1"
        assert sup.get("job-1") is task
        assert sup.tasks["job-1"] is task
        assert nowait.task_id == "job-2"
        assert nowait.name == work.__qualname__


async def test_default_name_is_the_qualname_and_ids_are_unique() -> None:
    """Without options the name is the function's qualname and ids differ."""

    async def work() -> None:
        return None

    def sync_work() -> None:
        return None

    async with Supervisor() as sup:
        tasks = [await sup.spawn(work) for _ in range(5)]
        tasks.append(await sup.spawn(sync_work))
        with anyio.fail_after(10):
            await sup.wait_idle()
    assert tasks[0].name == work.__qualname__
    assert "test_default_name_is_the_qualname" in tasks[0].name
    assert tasks[-1].name == sync_work.__qualname__
    ids = [t.task_id for t in tasks]
    assert len(set(ids)) == len(ids)
    assert all(isinstance(i, str) and i for i in ids)


async def test_tasks_mapping_and_get() -> None:
    """sup.tasks is a read-only mapping of live and finished tasks; get() finds them."""
    release = anyio.Event()

    async def blocked() -> None:
        await release.wait()

    async def quick() -> str:
        return "q"

    async with Supervisor() as sup:
        assert len(sup.tasks) == 0
        assert sup.get("nope") is None
        live = await sup.spawn(blocked)
        done = await sup.spawn(quick)
        with anyio.fail_after(10):
            await done.wait()
        assert set(sup.tasks) == {live.task_id, done.task_id}
        assert len(sup.tasks) == 2
        assert live.task_id in sup.tasks
        assert sup.tasks[live.task_id] is live
        assert sup.get(done.task_id) is done
        assert sup.get("unknown-id") is None
        assert "unknown-id" not in sup.tasks
        with pytest.raises(KeyError):
            sup.tasks["unknown-id"]
        with pytest.raises(TypeError):
            sup.tasks["x"] = live  # type: ignore[index]
        assert dict(sup.tasks.items()) == {live.task_id: live, done.task_id: done}
        release.set()
        with anyio.fail_after(10):
            await live.wait()


async def test_cancel_a_pending_task_that_never_starts() -> None:
    """A task cancelled while PENDING never runs: no task:started, attempt=0."""
    events = Events()
    ran: list[str] = []

    async def work() -> None:
        ran.append("async")

    def sync_work() -> None:
        ran.append("sync")

    async with Supervisor(on_event=events) as sup:
        tasks = [await sup.spawn(work), sup.spawn_nowait(sync_work)]
        for task in tasks:
            assert _state(task) is TaskState.PENDING
            assert task.cancel("changed my mind") is True
            assert task.cancel("twice") is False
        with anyio.fail_after(10):
            for task in tasks:
                with pytest.raises(TaskCancelled):
                    await task.wait()
        stats = sup.stats()
        assert (stats.spawned, stats.cancelled, stats.pending, stats.running) == (
            2,
            2,
            0,
            0,
        )
    assert ran == []
    for task in tasks:
        assert _state(task) is TaskState.CANCELLED
        assert task.cancel_reason == "changed my mind"
        assert task.started_at is None
        assert task.completed_at is not None
        assert task.attempts == 0
        assert task.abandoned is False
        seen = events.for_task(task.task_id)
        assert [name for name, _ in seen] == ["task:cancelled"]
        assert seen[0][1]["attempt"] == 0
        assert seen[0][1]["reason"] == "changed my mind"


async def test_cancel_a_running_task() -> None:
    """A RUNNING task is cancelled at its next checkpoint and records the reason."""
    events = Events()
    entered = anyio.Event()
    cleaned_up: list[bool] = []

    async def forever() -> None:
        entered.set()
        try:
            await anyio.sleep_forever()
        finally:
            cleaned_up.append(True)

    async with Supervisor(on_event=events) as sup:
        task = await sup.spawn(forever)
        with anyio.fail_after(10):
            await entered.wait()
        assert _state(task) is TaskState.RUNNING
        assert task.cancel("stop it") is True
        with anyio.fail_after(10), pytest.raises(TaskCancelled):
            await task.wait()
    assert cleaned_up == [True]
    assert _state(task) is TaskState.CANCELLED
    assert task.started_at is not None
    assert task.attempts == 1
    assert [name for name, _ in events.for_task(task.task_id)] == [
        "task:started",
        "task:cancelled",
    ]
    assert events.for_task(task.task_id)[1][1]["reason"] == "stop it"
    assert events.for_task(task.task_id)[1][1]["attempt"] == 1


async def test_cancel_returns_false_on_a_finished_task() -> None:
    """cancel() on a task that already ended does nothing and returns False."""

    async def ok() -> int:
        return 1

    async def fail() -> None:
        raise ValueError("x")

    async with Supervisor() as sup:
        done = await sup.spawn(ok)
        failed = await sup.spawn(fail)
        with anyio.fail_after(10):
            await sup.wait_idle()
        before = sup.stats()
        assert done.cancel() is False
        assert failed.cancel() is False
        assert done.state is TaskState.SUCCEEDED
        assert failed.state is TaskState.FAILED
        assert done.cancel_reason is None
        assert sup.stats() == before


async def test_cancel_that_returned_true_ends_the_task_cancelled() -> None:
    """cancel() returning True means CANCELLED, even if the body was just woken."""
    gate = anyio.Event()

    async def body() -> str:
        await gate.wait()
        return "done"

    async with Supervisor() as sup:
        task = await sup.spawn(body)
        await anyio.wait_all_tasks_blocked()
        assert _state(task) is TaskState.RUNNING
        gate.set()  # the body is woken, but has not run yet
        assert task.cancel("late") is True
        with anyio.fail_after(10), pytest.raises(TaskCancelled):
            await task.wait()
        assert _state(task) is TaskState.CANCELLED
        assert task.cancel_reason == "late"
        assert task.result is None
        stats = sup.stats()
        assert (stats.succeeded, stats.cancelled) == (0, 1)


async def test_spawn_threadsafe_from_the_event_loop_thread_spawns_directly() -> None:
    """ "Callable from any thread" includes the loop's own: no deadlock, same task."""
    structlog.contextvars.bind_contextvars(request_id="loop-thread")
    try:
        async with Supervisor("app") as sup:
            task_id = sup.spawn_threadsafe(structlog.contextvars.get_contextvars)
            task = sup.get(task_id)
            assert task is not None
            assert task.state is TaskState.PENDING
            assert (await task.wait())["request_id"] == "loop-thread"
    finally:
        structlog.contextvars.clear_contextvars()
