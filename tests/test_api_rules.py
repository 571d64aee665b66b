"""API rules: checkpoints, threads, eager task factories, records and versions."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import traceback
from importlib import metadata
from typing import Any

import anyio
import anyio.to_thread
import pytest
from structlog.testing import capture_logs

import supervisor
from supervisor import (
    BackgroundTask,
    BackgroundTaskManager,
    Overloaded,
    Retry,
    ShutdownReport,
    Supervisor,
    SupervisorClosed,
    SupervisorError,
    SupervisorNotStarted,
    SupervisorStats,
    TaskEvent,
    TaskState,
)


async def _quick(x: int = 0) -> int:
    await anyio.lowlevel.checkpoint()
    return x


async def _forever() -> None:
    await anyio.sleep_forever()


# -- checkpoints ---------------------------------------------------------------


async def test_spawn_is_a_checkpoint_and_spawns_nothing_when_cancelled() -> None:
    """Inside a cancelled scope, await sup.spawn raises the cancellation first."""
    async with Supervisor() as sup:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await sup.spawn(_quick)
            pytest.fail("spawn() did not raise the cancellation")  # pragma: no cover
        assert scope.cancelled_caught
        assert sup.stats().spawned == 0


async def test_wait_idle_and_add_task_are_checkpoints() -> None:
    """wait_idle() (even when idle) and add_task() raise a pending cancellation."""
    async with Supervisor() as sup:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await sup.wait_idle()
        assert scope.cancelled_caught
        manager = BackgroundTaskManager(supervisor=sup)
        with anyio.CancelScope() as scope:
            scope.cancel()
            await manager.add_task(_quick)
        assert scope.cancelled_caught
        assert sup.stats().spawned == 0


# -- eager task factories and finished records ---------------------------------


async def test_spawned_tasks_are_pending_and_finished_ones_keep_no_native_task() -> (
    None
):
    """PENDING right after spawn (eager factory or not); nothing runnable kept after."""
    async with Supervisor() as sup:
        task = await sup.spawn(_quick, 7)
        assert task.state is TaskState.PENDING
        assert task.attempts == 0
        other = sup.spawn_nowait(_quick, 8)
        assert other.state is TaskState.PENDING
        assert await task.wait() == 7
        await sup.wait_idle()
    gc.collect()
    for record in (task, other):
        held = gc.get_referents(record)
        assert not [r for r in held if isinstance(r, asyncio.Task)]
        assert not [r for r in held if asyncio.iscoroutine(r)]


# -- threads -------------------------------------------------------------------


async def test_loop_only_calls_from_a_worker_thread_name_spawn_threadsafe() -> None:
    """spawn_nowait from a worker thread: SupervisorError, nothing registered."""
    async with Supervisor() as sup:
        before = sup.stats()

        def in_thread() -> None:
            sup.spawn_nowait(_quick)

        with pytest.raises(SupervisorError, match="spawn_threadsafe") as info:
            await anyio.to_thread.run_sync(in_thread)
        assert "another thread" in str(info.value)
        assert sup.stats() == before
        assert len(sup.tasks) == 0
        # The right call from the same thread works.
        task_id = await anyio.to_thread.run_sync(sup.spawn_threadsafe, _quick, 3)
        task = sup.get(task_id)
        assert task is not None
        assert await task.wait() == 3


async def test_spawn_nowait_from_a_plain_thread_is_refused() -> None:
    """A plain threading.Thread gets the same clear error."""
    async with Supervisor() as sup:
        errors: list[BaseException] = []

        def in_thread() -> None:
            try:
                sup.spawn_nowait(_quick)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=in_thread)
        thread.start()
        await anyio.to_thread.run_sync(thread.join)
        assert len(errors) == 1
        assert isinstance(errors[0], SupervisorError)
        assert "spawn_threadsafe" in str(errors[0])
        assert sup.stats().spawned == 0


@pytest.mark.parametrize("how", ["anyio-worker", "plain-thread"])
async def test_cancel_is_thread_safe(how: str) -> None:
    """task.cancel() from another thread cancels the task and returns True."""
    async with Supervisor() as sup:
        started = anyio.Event()

        async def blocked() -> None:
            started.set()
            await anyio.sleep_forever()

        task = await sup.spawn(blocked)
        await started.wait()
        if how == "anyio-worker":
            said = await anyio.to_thread.run_sync(task.cancel, "from a thread")
        else:
            results: list[bool] = []

            def run() -> None:
                results.append(task.cancel("from a thread"))

            thread = threading.Thread(target=run)
            thread.start()
            await anyio.to_thread.run_sync(thread.join)
            (said,) = results
        assert said is True
        with anyio.fail_after(10):
            await task.wait_done()
        assert task.state is TaskState.CANCELLED
        assert task.cancel_reason == "from a thread"
        assert await anyio.to_thread.run_sync(task.cancel) is False


# -- records, exceptions, version ------------------------------------------------


def test_records_are_not_publicly_constructible() -> None:
    """Records come from the supervisor; building one says where to get it."""
    with pytest.raises(TypeError, match=r"sup\.spawn"):
        BackgroundTask()
    with pytest.raises(TypeError, match=r"sup\.stats\(\)"):
        SupervisorStats(0, 0, 0, 0, 0, 0)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="shutdown"):
        ShutdownReport()
    with pytest.raises(TypeError, match="listeners"):
        TaskEvent()  # type: ignore[call-arg]


def test_exceptions_subclass_the_nearest_builtin() -> None:
    for cls in (SupervisorClosed, SupervisorNotStarted, Overloaded):
        assert issubclass(cls, SupervisorError)
        assert issubclass(cls, RuntimeError)


def test_version_and_public_module_paths() -> None:
    assert supervisor.__version__ == metadata.version("nursery-supervisor")
    for name in ("Supervisor", "BackgroundTask", "TaskState", "Retry", "TaskEvent"):
        assert getattr(supervisor, name).__module__ == "supervisor"
    assert repr(Supervisor("x")).startswith("<supervisor.Supervisor 'x'")


# -- configuration -------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [
        (lambda: Supervisor().options(timeout="5"), TypeError, ["number", "'5'"]),
        (lambda: Retry(initial="x"), TypeError, ["initial", "'x'"]),
        (lambda: Retry(attempts=True), TypeError, ["attempts", "True"]),
        (lambda: Retry(jitter=2), ValueError, ["jitter", "[0, 1]"]),
        (lambda: Supervisor(thread_limit=0), ValueError, ["thread_limit", "0"]),
        (lambda: Supervisor(thread_limit=True), TypeError, ["thread_limit", "True"]),
        (lambda: Supervisor(history=True), TypeError, ["history", "True"]),
        (lambda: Supervisor(shutdown_timeout="1"), TypeError, ["shutdown_timeout"]),
        (lambda: Supervisor(history_ttl=0), ValueError, ["history_ttl"]),
        (lambda: Supervisor(success_level="trace"), ValueError, ["success_level"]),
        (lambda: Supervisor(name=""), ValueError, ["name"]),
        (lambda: Supervisor().options(shield="yes"), TypeError, ["shield"]),
    ],
)
def test_configuration_errors_check_type_then_value(
    make: Any, error: type[Exception], words: list[str]
) -> None:
    """Every option: the type first, then the value, shown with repr."""
    with pytest.raises(error) as info:
        make()
    message = str(info.value)
    for word in words:
        assert word in message, message


def test_thread_limit_message_does_not_offer_none() -> None:
    with pytest.raises(ValueError, match="thread_limit") as info:
        Supervisor(thread_limit=0)
    assert "None" not in str(info.value)


# -- small features --------------------------------------------------------------


async def test_wait_with_a_timeout_leaves_the_task_running() -> None:
    async with Supervisor(shutdown_timeout=0) as sup:
        task = await sup.spawn(_forever)
        with pytest.raises(TimeoutError):
            await task.wait(timeout=0.01)
        assert task.state is TaskState.RUNNING
        quick = await sup.spawn(_quick, 5)
        assert await quick.wait(timeout=10) == 5


async def test_stats_as_dict_is_json_ready() -> None:
    async with Supervisor() as sup:
        await (await sup.spawn(_quick)).wait()
        data = sup.stats().as_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["spawned"] == data["succeeded"] == 1


async def test_history_ttl_forgets_old_records() -> None:
    """Finished records older than history_ttl are forgotten; totals stay."""
    async with Supervisor(history_ttl=0.05) as sup:
        task = await sup.spawn(_quick)
        await task.wait()
        assert sup.get(task.task_id) is task
        await anyio.sleep(0.2)  # the one thing this test is about is time passing
        assert sup.get(task.task_id) is None
        assert task.task_id not in sup.tasks
        assert sup.stats().succeeded == 1


async def test_success_level_info_logs_every_success() -> None:
    with capture_logs() as logs:
        async with Supervisor(success_level="info") as sup:
            await (await sup.spawn(_quick)).wait()
    (line,) = [e for e in logs if e["event"] == "task:succeeded"]
    assert line["log_level"] == "info"


# -- listeners -------------------------------------------------------------------


async def test_listeners_get_frozen_events_and_a_raising_one_is_removed() -> None:
    seen: list[TaskEvent] = []
    calls = 0

    def broken(event: TaskEvent) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("listener bug")

    sup = Supervisor()
    sup.add_listener(seen.append)
    sup.add_listener(broken)
    with capture_logs() as logs:
        async with sup:
            first = await sup.spawn(_quick, 1)
            await first.wait()
            second = await sup.spawn(_quick, 2)
            await second.wait()
            await sup.wait_idle()
    assert calls == 1
    failures = [e for e in logs if e["event"] == "supervisor:listener_failed"]
    assert len(failures) == 1
    assert failures[0]["error"] == "listener bug"
    assert [(e.event, e.task_id) for e in seen] == [
        ("task:started", first.task_id),
        ("task:succeeded", first.task_id),
        ("task:started", second.task_id),
        ("task:succeeded", second.task_id),
    ]
    assert seen[1].state is TaskState.SUCCEEDED
    assert seen[1].as_data()["name"] == first.name
    assert second.state is TaskState.SUCCEEDED
    with pytest.raises(AttributeError):
        seen[0].event = "x"  # type: ignore[misc]


async def test_log_keys_are_flat() -> None:
    with capture_logs() as logs:
        async with Supervisor() as sup:
            await (await sup.spawn(_quick)).wait()
    for line in logs:
        assert not [k for k, v in line.items() if isinstance(v, dict)], line
        assert "detail" not in line


# -- tracebacks --------------------------------------------------------------------


async def test_a_timeout_is_logged_with_the_tasks_own_frames() -> None:
    async def slow_task() -> None:
        await anyio.sleep(30)

    with capture_logs() as logs:
        async with Supervisor() as sup:
            task = await sup.options(timeout=0.01).spawn(slow_task)
            await task.wait_done()
    assert task.state is TaskState.FAILED
    assert type(task.error) is TimeoutError
    (line,) = [e for e in logs if e["event"] == "task:failed"]
    text = "".join(traceback.format_exception(line["exc_info"]))
    assert "slow_task" in text
    assert "Cancelled" not in text
    for internals in ("/anyio/", "/supervisor/", "/asyncio/", "/trio/", "/outcome/"):
        assert internals not in text, text
    assert len(text.splitlines()) < 10, text
