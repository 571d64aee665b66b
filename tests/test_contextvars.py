"""Tasks run in a copy of their spawner's contextvars (SPEC 3 and its fixed details).

That is what puts a request's ``request_id`` (bound with
``structlog.contextvars``) on the log lines of the background tasks the
request spawned, including tasks that waited in the pending queue: each one
runs in its own spawner's context, never in the context of the task that
freed its slot (aiojobs' flaw).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.to_thread
import pytest
import structlog
from structlog.contextvars import bind_contextvars, bound_contextvars, get_contextvars
from structlog.typing import EventDict

from supervisor import Supervisor, TaskFailed

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("test_var", default="unset")


@pytest.fixture(autouse=True)
def _clean_contextvars() -> Iterator[None]:
    """No structlog binding leaks between tests."""
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()


def _capture() -> Any:
    """capture_logs with merge_contextvars, as an app's processors would have it."""
    return structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    )


def _failures(logs: list[EventDict]) -> dict[str, EventDict]:
    """The task:failed lines by task id (exactly one per task)."""
    lines: dict[str, EventDict] = {}
    for line in logs:
        if line["event"] == "task:failed":
            assert line["task_id"] not in lines
            lines[line["task_id"]] = line
    return lines


async def _async_fail() -> None:
    raise ValueError("async boom")


def _sync_fail() -> None:
    raise ValueError("sync boom")


@pytest.mark.parametrize("func", [_async_fail, _sync_fail], ids=["async", "sync"])
async def test_request_id_appears_on_the_failure_line(func: Callable[[], None]) -> None:
    """A request_id bound in the spawner shows on the task's task:failed line."""
    with _capture() as logs:
        async with Supervisor() as sup:
            with bound_contextvars(request_id="req-1"):
                task = await sup.spawn(func)
            unbound = await sup.spawn(func)
            with anyio.fail_after(10):
                await sup.wait_idle()
    lines = _failures(logs)
    assert lines[task.task_id]["request_id"] == "req-1"
    assert "request_id" not in lines[unbound.task_id]
    # The spawner's own binding ended with its block; the task did not change it.
    assert "request_id" not in get_contextvars()


async def test_queued_tasks_keep_their_own_spawners_context() -> None:
    """Tasks waiting for a max_concurrency slot log their spawner's request_id."""
    count = 8
    release = anyio.Event()
    expected: dict[str, str] = {}
    seen_in_body: dict[str, str] = {}

    async def blocker() -> None:
        await release.wait()

    async def fail(tag: str) -> None:
        seen_in_body[tag] = get_contextvars().get("request_id", "<none>")
        raise RuntimeError(tag)

    async def spawner(sup: Supervisor, i: int) -> None:
        with bound_contextvars(request_id=f"req-{i}"):
            task = await sup.spawn(fail, f"t{i}")
        expected[task.task_id] = f"req-{i}"

    with _capture() as logs:
        async with Supervisor(max_concurrency=1) as sup:
            with bound_contextvars(request_id="blocker"):
                first = await sup.spawn(blocker)
            async with anyio.create_task_group() as tg:
                for i in range(count):
                    tg.start_soon(spawner, sup, i)
            assert len(expected) == count
            stats = sup.stats()
            assert (stats.running, stats.pending) == (1, count)
            release.set()
            with anyio.fail_after(10):
                await sup.wait_idle()
    assert first.error is None
    lines = _failures(logs)
    assert set(lines) == set(expected)
    for task_id, request_id in expected.items():
        assert lines[task_id]["request_id"] == request_id
    assert seen_in_body == {f"t{i}": f"req-{i}" for i in range(count)}


@pytest.mark.parametrize("func", [_async_fail, _sync_fail], ids=["async", "sync"])
async def test_spawn_threadsafe_uses_the_calling_threads_context(
    func: Callable[[], None],
) -> None:
    """spawn_threadsafe runs the task in the calling thread's contextvars."""

    def in_thread(sup: Supervisor) -> str:
        # The thread starts with a copy of the async caller's context; what
        # counts is the thread's own binding at the time of the call.
        bind_contextvars(request_id="from-thread")
        VAR.set("thread-value")
        return sup.spawn_threadsafe(func)

    with _capture() as logs:
        async with Supervisor() as sup:
            with bound_contextvars(request_id="from-loop"):
                task_id = await anyio.to_thread.run_sync(in_thread, sup)
            with anyio.fail_after(10):
                await sup.wait_idle()
    assert _failures(logs)[task_id]["request_id"] == "from-thread"
    assert VAR.get() == "unset"


async def test_spawn_threadsafe_task_sees_thread_contextvar() -> None:
    """A plain ContextVar set in the calling thread is visible in the task."""

    async def read() -> str:
        return VAR.get()

    def in_thread(sup: Supervisor) -> str:
        VAR.set("thread-value")
        return sup.spawn_threadsafe(read)

    async with Supervisor() as sup:
        task_id = await anyio.to_thread.run_sync(in_thread, sup)
        task = sup.get(task_id)
        assert task is not None
        with anyio.fail_after(10):
            assert await task.wait() == "thread-value"


async def _read_and_change_async() -> str:
    seen = VAR.get()
    VAR.set("changed-by-task")
    bind_contextvars(task_only="yes")
    await anyio.lowlevel.checkpoint()
    return seen


def _read_and_change_sync() -> str:
    seen = VAR.get()
    VAR.set("changed-by-task")
    bind_contextvars(task_only="yes")
    return seen


@pytest.mark.parametrize(
    "func", [_read_and_change_async, _read_and_change_sync], ids=["async", "sync"]
)
async def test_plain_contextvar_is_copied_and_changes_do_not_leak_back(
    func: Callable[[], Any],
) -> None:
    """The task sees the spawner's ContextVar value; its own changes stay its own."""
    async with Supervisor() as sup:
        token = VAR.set("spawner-value")
        try:
            first = await sup.spawn(func)
            second = await sup.spawn(func)
            with anyio.fail_after(10):
                assert await first.wait() == "spawner-value"
                # A sibling spawned from the same context is not affected either.
                assert await second.wait() == "spawner-value"
            assert VAR.get() == "spawner-value"
            assert "task_only" not in get_contextvars()
        finally:
            VAR.reset(token)


async def test_context_is_captured_at_spawn_time() -> None:
    """The task sees the spawner's value as of spawn, not later changes."""
    release = anyio.Event()

    async def read_later() -> str:
        await release.wait()
        return VAR.get()

    async with Supervisor() as sup:
        token = VAR.set("at-spawn")
        try:
            task = await sup.spawn(read_later)
            VAR.set("after-spawn")
            release.set()
            with anyio.fail_after(10):
                assert await task.wait() == "at-spawn"
        finally:
            VAR.reset(token)


async def test_failure_log_of_queued_sync_task_has_its_request_id() -> None:
    """A sync task that waited for max_concurrency logs its own spawner's request_id."""
    release = anyio.Event()

    async def blocker() -> None:
        await release.wait()

    with _capture() as logs:
        async with Supervisor(max_concurrency=1) as sup:
            with bound_contextvars(request_id="blocker"):
                await sup.spawn(blocker)
            with bound_contextvars(request_id="sync-req"):
                task = await sup.spawn(_sync_fail)
            release.set()
            with anyio.fail_after(10), pytest.raises(TaskFailed):
                await task.wait()
    assert _failures(logs)[task.task_id]["request_id"] == "sync-req"
