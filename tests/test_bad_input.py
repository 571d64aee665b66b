"""Bad input gets a clear error at the call that caused it; nothing is lost (SPEC 7).

Each mistake raises at once with a message that names the problem and the
fix, and leaves ``stats()`` and ``tasks`` exactly as they were.
"""

from __future__ import annotations

import gc
import inspect
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import anyio
import anyio.to_thread
import pytest

from supervisor import (
    Supervisor,
    SupervisorClosed,
    SupervisorError,
    SupervisorNotStarted,
    SupervisorStats,
    TaskFailed,
)


async def _work(x: int) -> int:
    return x


def _sync_work(x: int) -> int:
    return x


async def _agen() -> AsyncIterator[int]:
    yield 1


def _gen() -> Iterator[int]:
    yield 1


Snapshot = tuple[SupervisorStats, dict[str, Any]]


def _snapshot(sup: Supervisor) -> Snapshot:
    return sup.stats(), dict(sup.tasks)


async def _with_a_live_task(sup: Supervisor, release: anyio.Event) -> None:
    """Give the supervisor some state that a bad call must leave alone."""

    async def blocked() -> None:
        await release.wait()

    await sup.options(task_id="live").spawn(blocked)
    await sup.spawn(_work, 1)
    await anyio.wait_all_tasks_blocked()


SpawnCall = Callable[..., Awaitable[Any]]


def _entry_points(sup: Supervisor) -> dict[str, SpawnCall]:
    """Every way to spawn, as async callables taking (func, *args, **kwargs)."""

    async def nowait(func: Any, *args: Any, **kwargs: Any) -> Any:
        return sup.spawn_nowait(func, *args, **kwargs)

    async def threadsafe(func: Any, *args: Any, **kwargs: Any) -> Any:
        def call() -> str:
            return sup.spawn_threadsafe(func, *args, **kwargs)

        return await anyio.to_thread.run_sync(call)

    async def options(func: Any, *args: Any, **kwargs: Any) -> Any:
        return await sup.options(name="x").spawn(func, *args, **kwargs)

    return {
        "spawn": sup.spawn,
        "spawn_nowait": nowait,
        "spawn_threadsafe": threadsafe,
        "options.spawn": options,
    }


async def test_spawning_a_non_callable() -> None:
    """A non-callable raises TypeError naming the value and asking for a function."""
    release = anyio.Event()
    async with Supervisor() as sup:
        await _with_a_live_task(sup, release)
        before = _snapshot(sup)
        for how, spawn in _entry_points(sup).items():
            with pytest.raises(TypeError) as info:
                await spawn(42)
            message = str(info.value)
            assert "42" in message, how
            assert "needs a function" in message, how
            assert _snapshot(sup) == before, how
        release.set()


async def test_spawning_a_coroutine_object() -> None:
    """A coroutine object is refused with a hint to pass the function, and closed."""
    release = anyio.Event()
    async with Supervisor() as sup:
        await _with_a_live_task(sup, release)
        before = _snapshot(sup)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for how, spawn in _entry_points(sup).items():
                coro = _work(1)
                with pytest.raises(TypeError) as info:
                    await spawn(coro)
                message = str(info.value)
                assert "not an awaitable" in message, how
                assert "sup.spawn(_work, arg, key=value)" in message, how
                assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED, how
                assert _snapshot(sup) == before, how
                del coro
            gc.collect()
        assert not [w for w in caught if "never awaited" in str(w.message)]
        release.set()


async def test_spawning_an_already_awaited_coroutine() -> None:
    """A coroutine that was already awaited is refused like any coroutine object."""
    async with Supervisor() as sup:
        coro = _work(5)
        assert await coro == 5
        before = _snapshot(sup)
        with pytest.raises(TypeError, match="not an awaitable"):
            await sup.spawn(coro)
        with pytest.raises(TypeError, match="not an awaitable"):
            sup.spawn_nowait(coro)
        assert _snapshot(sup) == before


@pytest.mark.parametrize("func", [_work, _sync_work], ids=["async", "sync"])
@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((), {}), ((1, 2), {}), ((1,), {"y": 2}), ((), {"timeout": 3})],
    ids=["missing", "too-many", "unknown-kw", "option-like-kw"],
)
async def test_arguments_that_do_not_match_fail_at_spawn(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """Arguments that do not fit the function raise TypeError at spawn, naming it."""
    release = anyio.Event()
    ran: list[Any] = []
    async with Supervisor() as sup:
        await _with_a_live_task(sup, release)
        before = _snapshot(sup)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for how, spawn in _entry_points(sup).items():
                with pytest.raises(TypeError) as info:
                    await spawn(func, *args, **kwargs)
                message = str(info.value)
                assert f"cannot spawn {func.__qualname__}" in message, how
                assert "sup.options(" in message, how
                assert _snapshot(sup) == before, how
            gc.collect()
        assert not [w for w in caught if "never awaited" in str(w.message)]
        release.set()
    assert ran == []


@pytest.mark.parametrize("func", [_agen, _gen], ids=["async-generator", "generator"])
async def test_spawning_a_generator_function(func: Callable[..., Any]) -> None:
    """Generator functions cannot run to completion as tasks: TypeError with a hint."""
    async with Supervisor() as sup:
        before = _snapshot(sup)
        for how, spawn in _entry_points(sup).items():
            with pytest.raises(TypeError) as info:
                await spawn(func)
            message = str(info.value)
            assert func.__qualname__ in message, how
            assert "generator function" in message, how
            assert "wrap it" in message, how
            assert _snapshot(sup) == before, how


async def test_a_sync_wrapper_returning_a_coroutine_fails_the_task() -> None:
    """A plain function returning a coroutine fails its task with a clear TypeError."""

    def wrapper() -> Any:
        return _work(1)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with Supervisor() as sup:
            task = await sup.spawn(wrapper)
            with anyio.fail_after(10), pytest.raises(TaskFailed):
                await task.wait()
        gc.collect()
    assert isinstance(task.error, TypeError)
    assert "async def" in str(task.error)
    assert not [w for w in caught if "never awaited" in str(w.message)]


async def test_spawning_before_startup() -> None:
    """Spawning on a supervisor that was never started raises SupervisorNotStarted."""
    sup = Supervisor(name="early")
    before = _snapshot(sup)
    with pytest.raises(SupervisorNotStarted) as info:
        await sup.spawn(_work, 1)
    assert "'early' has not been started" in str(info.value)
    assert "startup()" in str(info.value)
    with pytest.raises(SupervisorNotStarted):
        sup.spawn_nowait(_work, 1)
    with pytest.raises(SupervisorNotStarted):
        sup.spawn_threadsafe(_work, 1)
    with pytest.raises(SupervisorNotStarted):
        await anyio.to_thread.run_sync(sup.spawn_threadsafe, _sync_work, 1)
    with pytest.raises(SupervisorNotStarted):
        await sup.options(task_id="x").spawn(_work, 1)
    assert _snapshot(sup) == before
    assert isinstance(info.value, SupervisorError)


async def test_spawning_after_shutdown() -> None:
    """Spawning after shutdown raises SupervisorClosed, from any entry point."""
    async with Supervisor(name="done") as sup:
        await sup.spawn(_work, 1)
    before = _snapshot(sup)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for how, spawn in _entry_points(sup).items():
            with pytest.raises(SupervisorClosed) as info:
                await spawn(_work, 1)
            assert "'done' is shut down" in str(info.value), how
            assert "spawn tasks before lifespan shutdown" in str(info.value), how
            assert _snapshot(sup) == before, how
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]
    assert before[0].spawned == 1


async def test_shutdown_with_a_negative_timeout() -> None:
    """shutdown(timeout=-1) is a ValueError at the call and shuts nothing down."""
    release = anyio.Event()
    async with Supervisor() as sup:
        await _with_a_live_task(sup, release)
        before = _snapshot(sup)
        with pytest.raises(ValueError, match="timeout") as info:
            await sup.shutdown(timeout=-1)
        assert ">= 0" in str(info.value)
        assert sup.running
        assert _snapshot(sup) == before
        task = await sup.spawn(_work, 7)  # still open for work
        with anyio.fail_after(10):
            assert await task.wait() == 7
        release.set()


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"max_concurrency": 0}, ["max_concurrency", "positive"]),
        ({"max_concurrency": -3}, ["max_concurrency", "positive"]),
        ({"max_concurrency": 2, "max_pending": 0}, ["max_pending", "positive"]),
        ({"max_concurrency": 2, "max_pending": -1}, ["max_pending", "positive"]),
        ({"thread_limit": 0}, ["thread_limit", "positive"]),
        ({"thread_limit": -1}, ["thread_limit", "positive"]),
        ({"history": -1}, ["history", ">= 0"]),
        ({"shutdown_timeout": -1}, ["shutdown_timeout", ">= 0"]),
        ({"shutdown_timeout": -0.5}, ["shutdown_timeout", ">= 0"]),
        ({"event_timeout": 0}, ["event_timeout", "> 0"]),
        ({"max_pending": 5}, ["max_pending", "needs max_concurrency"]),
    ],
)
def test_bad_limits_are_value_errors_at_construction(
    kwargs: dict[str, Any], words: list[str]
) -> None:
    """Zero/negative limits and negative timeouts/history raise ValueError at once."""
    with pytest.raises(ValueError, match=words[0]) as info:
        Supervisor(**kwargs)
    message = str(info.value)
    for word in words:
        assert word in message
    assert repr(list(kwargs.values())[-1]) in message  # shows the offending value


@pytest.mark.parametrize("timeout", [0, 0.0, -1, -0.001])
async def test_zero_or_negative_task_timeout(timeout: float) -> None:
    """options(timeout=...) must be positive: ValueError before anything is spawned."""
    async with Supervisor() as sup:
        before = _snapshot(sup)
        with pytest.raises(ValueError, match="timeout") as info:
            await sup.options(timeout=timeout).spawn(_work, 1)
        message = str(info.value)
        assert "timeout" in message
        assert "positive" in message
        assert "None for no limit" in message
        assert _snapshot(sup) == before


async def test_a_duplicate_live_task_id() -> None:
    """A task id used by a live task raises SupervisorError from every entry point."""
    release = anyio.Event()
    async with Supervisor() as sup:
        await _with_a_live_task(sup, release)
        before = _snapshot(sup)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            spawner = sup.options(task_id="live")
            with pytest.raises(SupervisorError) as info:
                await spawner.spawn(_work, 1)
            assert "'live' is already used by a live task" in str(info.value)
            assert "pick another id" in str(info.value)
            with pytest.raises(SupervisorError):
                spawner.spawn_nowait(_sync_work, 1)
            with pytest.raises(SupervisorError):
                await anyio.to_thread.run_sync(spawner.spawn_threadsafe, _work, 1)
            gc.collect()
        assert not [w for w in caught if "never awaited" in str(w.message)]
        assert _snapshot(sup) == before
        release.set()
        with anyio.fail_after(10):
            await sup.wait_idle()
        assert sup.stats().spawned == 2


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"task_id": ""}, ValueError),
        ({"task_id": 5}, TypeError),
        ({"name": 5}, TypeError),
        ({"retry": 3}, TypeError),
        ({"timeout": "5"}, TypeError),
        ({"shield": 1}, TypeError),
    ],
)
def test_bad_option_types(kwargs: dict[str, Any], error: type[Exception]) -> None:
    """Wrong types raise TypeError (bad values ValueError) at options()."""
    sup = Supervisor()
    with pytest.raises(error) as info:
        sup.options(**kwargs)
    assert next(iter(kwargs)) in str(info.value)
