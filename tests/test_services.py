"""Long-running services: OTP restart strategies, intensity, readiness (SPEC 3).

A service is one ``BackgroundTask`` for its whole life, restarted in place:
``permanent`` after a crash or a return, ``transient`` after a crash only,
``temporary`` never. Too many restarts within ``period`` and it gives up
loudly (log, event, FAILED record, optionally stopping the supervisor).
Cancellation is never a crash.
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import math
import traceback
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import pytest
import structlog
from structlog.testing import capture_logs
from structlog.typing import EventDict

from supervisor import (
    Service,
    ServiceFailedToStart,
    Supervisor,
    SupervisorClosed,
    SupervisorError,
    SupervisorNotStarted,
    TaskState,
)
from supervisor.testing import capture_events


def _of(events: list[dict[str, Any]], task_id: str) -> list[str]:
    """The names of one task's events, in order."""
    return [event["event"] for event in events if event["task_id"] == task_id]


def _data(
    events: list[dict[str, Any]], task_id: str, name: str
) -> list[dict[str, Any]]:
    """One task's events of one name."""
    return [e for e in events if e["task_id"] == task_id and e["event"] == name]


def _lines(logs: list[EventDict], event: str) -> list[EventDict]:
    return [line for line in logs if line["event"] == event]


def _check_totals(sup: Supervisor) -> None:
    s = sup.stats()
    assert s.spawned == s.pending + s.running + s.succeeded + s.failed + s.cancelled


class Flaky:
    """A service that crashes (or returns) ``bad_runs`` times, then stays up."""

    def __init__(self, bad_runs: int, *, crash: bool = True) -> None:
        self.bad_runs = bad_runs
        self.crash = crash
        self.runs = 0
        self.up = anyio.Event()

    async def __call__(self) -> None:
        self.runs += 1
        if self.runs <= self.bad_runs:
            if self.crash:
                raise ConnectionError(f"broker down (run {self.runs})")
            return
        self.up.set()
        await anyio.sleep_forever()


async def _always_crash() -> None:
    raise ValueError("boom")


# -- readiness -------------------------------------------------------------


async def test_readiness_value_is_returned() -> None:
    """start_service waits for task_status.started(value) and returns value."""
    steps: list[str] = []

    async def consumer(
        queue: str,
        *,
        task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        steps.append("connecting")
        await anyio.lowlevel.checkpoint()
        steps.append("ready")
        task_status.started(f"listening on {queue}")
        await anyio.sleep_forever()

    async with Supervisor("app") as sup:
        svc = await sup.start_service(consumer, "jobs")
        assert isinstance(svc, Service)
        assert steps == ["connecting", "ready"]
        assert svc.value == "listening on jobs"
        assert svc.task.state is TaskState.RUNNING
        assert svc.task.attempts == 1
        assert svc.restarts == 0
        assert svc.name == "test_readiness_value_is_returned.<locals>.consumer"
        assert svc.restart == "permanent"
        assert repr(svc).startswith("<supervisor.Service 'test_readiness_value")
        assert "running permanent restarts=0" in repr(svc)
        assert sup.get(svc.task.task_id) is svc.task
        svc.cancel("done with it")
        await svc.task.wait_done()
    assert svc.task.state is TaskState.CANCELLED


async def test_without_task_status_returns_at_once() -> None:
    """A service without task_status: start_service returns before it runs."""
    flaky = Flaky(0)
    async with Supervisor("app", shutdown_timeout=0) as sup:
        svc = await sup.start_service(flaky, name="poller")
        assert svc.value is None
        assert svc.task.name == "poller"
        assert flaky.runs == 0
        with anyio.fail_after(10):
            await flaky.up.wait()
        assert svc.task.state is TaskState.RUNNING


async def test_partial_passes_keywords_and_task_status() -> None:
    """Keyword arguments go through functools.partial; task_status still arrives."""

    async def consumer(
        queue: str, *, prefetch: int, task_status: anyio.abc.TaskStatus[int]
    ) -> None:
        task_status.started(prefetch)
        await anyio.sleep_forever()

    async with Supervisor("app", shutdown_timeout=0) as sup:
        svc = await sup.start_service(functools.partial(consumer, prefetch=8), "q")
        assert svc.value == 8
        assert (
            svc.name == "test_partial_passes_keywords_and_task_status.<locals>.consumer"
        )


async def test_first_run_crash_before_started_raises_and_is_not_restarted() -> None:
    """A first run that crashes before started() raises ServiceFailedToStart."""

    async def consumer(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        raise ConnectionRefusedError("no broker at 127.0.0.1:5672")

    with capture_logs() as logs, capture_events() as events:
        async with Supervisor("app") as sup:
            with pytest.raises(ServiceFailedToStart) as info:
                await sup.start_service(consumer)
            assert isinstance(info.value.__cause__, ConnectionRefusedError)
            assert "ConnectionRefusedError" in str(info.value)
            assert isinstance(info.value, SupervisorError)
            (task,) = sup.tasks.values()
            await sup.wait_idle()
    assert task.state is TaskState.FAILED
    assert task.attempts == 1
    assert isinstance(task.error, ConnectionRefusedError)
    assert _of(events, task.task_id) == ["task:started", "task:failed"]
    assert not _lines(logs, "service:restarting")
    assert len(_lines(logs, "task:failed")) == 1
    assert sup.stats().failed == 1


async def test_first_run_return_before_started_raises() -> None:
    """Returning before started() is a startup failure too, explained."""

    async def consumer(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        return

    async with Supervisor("app") as sup:
        with pytest.raises(ServiceFailedToStart) as info:
            await sup.start_service(consumer, restart="permanent")
        cause = info.value.__cause__
        assert isinstance(cause, RuntimeError)
        assert "returned before it called task_status.started()" in str(cause)
        (task,) = sup.tasks.values()
        assert task.state is TaskState.FAILED
        assert task.attempts == 1


async def test_crash_after_started_is_restarted_with_a_fresh_status() -> None:
    """After readiness, crashes restart it; later started() calls are no-ops."""
    runs: list[int] = []
    up = anyio.Event()

    async def consumer(*, task_status: anyio.abc.TaskStatus[int]) -> None:
        runs.append(len(runs) + 1)
        task_status.started(len(runs))
        if len(runs) < 3:
            raise ConnectionResetError("dropped")
        up.set()
        await anyio.sleep_forever()

    with capture_logs():
        async with Supervisor("app", shutdown_timeout=0) as sup:
            svc = await sup.start_service(consumer)
            assert svc.value == 1
            with anyio.fail_after(10):
                await up.wait()
            assert svc.value == 1  # later runs' started() changed nothing
            assert svc.restarts == 2
            assert svc.task.attempts == 3


async def test_cancelling_the_caller_cancels_a_service_not_yet_ready() -> None:
    """Waiting for readiness is cancellable; the orphan service is stopped."""
    entered = anyio.Event()

    async def slow(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        entered.set()
        await anyio.sleep_forever()

    async with Supervisor("app") as sup:
        with anyio.CancelScope() as scope:

            async def cancel_when_entered() -> None:
                await entered.wait()
                scope.cancel()

            await sup.spawn(cancel_when_entered)
            await sup.start_service(slow)
        assert scope.cancelled_caught
        (task,) = [t for t in sup.tasks.values() if t.name.endswith("slow")]
        with anyio.fail_after(10):
            await task.wait_done()
        assert task.state is TaskState.CANCELLED
        assert task.cancel_reason is not None
        assert "start_service() was cancelled" in task.cancel_reason


# -- restart strategies ----------------------------------------------------


async def test_permanent_restarts_after_crash() -> None:
    """Each crash logs and emits service:restarting; the record stays RUNNING."""
    flaky = Flaky(2)
    with capture_logs() as logs, capture_events() as events:
        async with Supervisor("app", shutdown_timeout=0) as sup:
            svc = await sup.start_service(flaky, name="consumer", max_restarts=5)
            with anyio.fail_after(10):
                await flaky.up.wait()
            assert svc.task.state is TaskState.RUNNING
            assert svc.restarts == 2
            assert svc.task.attempts == 3
            assert _of(events, svc.task.task_id) == [
                "task:started",
                "service:restarting",
                "service:restarting",
            ]
    lines = _lines(logs, "service:restarting")
    assert [line["restarts"] for line in lines] == [1, 2]
    assert [line["attempt"] for line in lines] == [1, 2]
    for line in lines:
        assert line["log_level"] == "warning"
        assert line["reason"] == "crashed"
        assert line["error_type"] == "ConnectionError"
        assert isinstance(line["exc_info"], ConnectionError)
        # The service's own frame, not the supervisor's restart loop.
        frames = traceback.extract_tb(line["exc_info"].__traceback__)
        assert [frame.name for frame in frames] == ["__call__"], frames
        assert line["task_name"] == "consumer"
        assert line["supervisor"] == "app"
    assert lines[0]["error"] == "broker down (run 1)"
    data = _data(events, svc.task.task_id, "service:restarting")
    assert [d["restarts"] for d in data] == [1, 2]
    assert data[0]["error_type"] == "ConnectionError"
    assert data[0]["reason"] == "crashed"
    assert svc.task.state is TaskState.CANCELLED
    # One task for the whole life: one spawn, one terminal outcome.
    assert sup.stats().spawned == 1
    assert sup.stats().cancelled == 1


async def test_permanent_restarts_after_normal_return() -> None:
    """A permanent service that returns is restarted, logged as "returned"."""
    flaky = Flaky(1, crash=False)
    with capture_logs() as logs:
        async with Supervisor("app", shutdown_timeout=0) as sup:
            svc = await sup.start_service(flaky)
            with anyio.fail_after(10):
                await flaky.up.wait()
            assert svc.restarts == 1
    (line,) = _lines(logs, "service:restarting")
    assert line["reason"] == "returned"
    assert "error" not in line
    assert "exc_info" not in line


async def test_transient_restarts_after_crash_and_stops_on_return() -> None:
    """Transient: a crash restarts it, a normal return ends it SUCCEEDED."""
    runs = 0

    async def job() -> str:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise TimeoutError("poll timed out")
        return "drained"

    with capture_logs(), capture_events() as events:
        async with Supervisor("app") as sup:
            svc = await sup.start_service(job, restart="transient")
            assert await svc.task.wait() == "drained"
    assert runs == 2
    assert svc.restarts == 1
    assert svc.task.state is TaskState.SUCCEEDED
    assert _of(events, svc.task.task_id) == [
        "task:started",
        "service:restarting",
        "task:succeeded",
    ]


async def test_temporary_never_restarts() -> None:
    """Temporary: a crash ends it FAILED, a return SUCCEEDED; no restarts."""
    returns_runs = 0

    async def returns() -> int:
        nonlocal returns_runs
        returns_runs += 1
        return 7

    with capture_logs() as logs:
        async with Supervisor("app") as sup:
            crashed = await sup.start_service(_always_crash, restart="temporary")
            done = await sup.start_service(returns, restart="temporary")
            await sup.wait_idle()
    assert crashed.task.state is TaskState.FAILED
    assert isinstance(crashed.task.error, ValueError)
    assert crashed.task.attempts == 1
    assert crashed.restarts == 0
    assert done.task.state is TaskState.SUCCEEDED
    assert done.task.result == 7
    assert returns_runs == 1
    assert not _lines(logs, "service:restarting")
    assert not _lines(logs, "service:gave_up")


@pytest.mark.virtual_time
async def test_backoff_waits_before_each_restart(
    seconds: float, virtual_clock: bool
) -> None:
    """Each restart waits backoff seconds first (exactly, on a virtual clock)."""
    starts: list[float] = []
    up = anyio.Event()
    backoff = 5 * seconds

    async def service() -> None:
        starts.append(anyio.current_time())
        if len(starts) < 3:
            raise OSError("not yet")
        up.set()
        await anyio.sleep_forever()

    with capture_logs() as logs:
        async with Supervisor("app", shutdown_timeout=0) as sup:
            await sup.start_service(
                service, backoff=backoff, max_restarts=5, period=60 * seconds
            )
            with anyio.fail_after(1000 * seconds):
                await up.wait()
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    if virtual_clock:
        assert gaps == [pytest.approx(backoff), pytest.approx(backoff)]
    else:
        assert len(gaps) == 2
        assert all(gap >= 0.9 * backoff for gap in gaps)
    assert [line["backoff_s"] for line in _lines(logs, "service:restarting")] == [
        backoff,
        backoff,
    ]


# -- restart intensity -----------------------------------------------------


async def test_intensity_exceeded_gives_up_loudly() -> None:
    """More than max_restarts within period: log, event, FAILED record, stats."""
    with capture_logs() as logs, capture_events() as events:
        async with Supervisor("app") as sup:
            svc = await sup.start_service(
                _always_crash, name="consumer", max_restarts=2, period=60
            )
            with anyio.fail_after(10):
                await svc.task.wait_done()
            assert sup.running  # give_up="log" leaves the supervisor alone
            other = await sup.spawn(anyio.sleep, 0)
            await other.wait()
    task = svc.task
    assert task.state is TaskState.FAILED
    assert isinstance(task.error, ValueError)
    assert task.attempts == 3
    assert svc.restarts == 2
    assert _of(events, task.task_id) == [
        "task:started",
        "service:restarting",
        "service:restarting",
        "service:gave_up",
        "task:failed",
    ]
    (gave_up,) = _data(events, task.task_id, "service:gave_up")
    assert gave_up["restarts"] == 2
    assert gave_up["max_restarts"] == 2
    assert gave_up["period"] == 60
    assert gave_up["error_type"] == "ValueError"
    assert gave_up["error"] == "boom"
    (line,) = _lines(logs, "service:gave_up")
    assert line["log_level"] == "error"
    assert line["task_id"] == task.task_id
    assert line["task_name"] == "consumer"
    assert line["supervisor"] == "app"
    assert line["restarts"] == 2
    assert line["period"] == 60
    assert line["error"] == "boom"
    assert line["error_type"] == "ValueError"
    # One traceback per failure: the terminal line has it, not gave_up too.
    assert "exc_info" not in line
    assert len(_lines(logs, "service:restarting")) == 2
    (failed,) = _lines(logs, "task:failed")
    assert failed["exc_info"] is task.error
    stats = sup.stats()
    assert (stats.spawned, stats.failed, stats.succeeded) == (2, 1, 1)
    _check_totals(sup)


async def test_max_restarts_zero_gives_up_at_first_crash() -> None:
    """max_restarts=0: the first crash already exceeds the intensity."""
    with capture_logs() as logs:
        async with Supervisor("app") as sup:
            svc = await sup.start_service(_always_crash, max_restarts=0)
            await sup.wait_idle()
    assert svc.task.state is TaskState.FAILED
    assert svc.task.attempts == 1
    assert not _lines(logs, "service:restarting")
    assert len(_lines(logs, "service:gave_up")) == 1


async def test_permanent_service_that_keeps_returning_gives_up() -> None:
    """Returning in a loop also exhausts the intensity, with an explaining error."""

    async def returns() -> None:
        await anyio.lowlevel.checkpoint()

    with capture_logs() as logs:
        async with Supervisor("app") as sup:
            svc = await sup.start_service(returns, max_restarts=1, period=60)
            await sup.wait_idle()
    assert svc.task.state is TaskState.FAILED
    assert isinstance(svc.task.error, RuntimeError)
    assert "restart='transient'" in str(svc.task.error)
    (line,) = _lines(logs, "service:gave_up")
    assert line["error_type"] == "RuntimeError"


@pytest.mark.virtual_time
async def test_restarts_older_than_period_are_forgotten(
    seconds: float, virtual_clock: bool
) -> None:
    """The window slides: restarts spaced wider than period never add up."""
    flaky = Flaky(3)
    with capture_logs() as logs:
        async with Supervisor("app", shutdown_timeout=0) as sup:
            # Each restart waits 10 s, longer than the 5 s window.
            svc = await sup.start_service(
                flaky, max_restarts=1, period=5 * seconds, backoff=10 * seconds
            )
            t0 = anyio.current_time()
            with anyio.fail_after(1000 * seconds):
                await flaky.up.wait()
            assert svc.task.state is TaskState.RUNNING
            assert svc.restarts == 3
            if virtual_clock:  # three backoffs, nothing else took time
                assert anyio.current_time() - t0 == pytest.approx(30)
    assert not _lines(logs, "service:gave_up")


@pytest.mark.virtual_time
async def test_restarts_within_period_give_up_at_the_limit(
    seconds: float, virtual_clock: bool
) -> None:
    """With backoff 1 s and period 60 s, the fourth crash in a row gives up."""
    with capture_logs() as logs:
        async with Supervisor("app") as sup:
            t0 = anyio.current_time()
            svc = await sup.start_service(
                _always_crash, max_restarts=3, period=60 * seconds, backoff=seconds
            )
            with anyio.fail_after(1000 * seconds):
                await svc.task.wait_done()
            elapsed = anyio.current_time() - t0
    assert svc.task.state is TaskState.FAILED
    assert svc.restarts == 3
    assert svc.task.attempts == 4
    if virtual_clock:
        assert elapsed == pytest.approx(3)
    assert len(_lines(logs, "service:restarting")) == 3
    (line,) = _lines(logs, "service:gave_up")
    assert line["period"] == 60 * seconds


async def test_give_up_shutdown_stops_the_supervisor() -> None:
    """give_up="shutdown": others cancelled, spawns refused, the body woken."""
    other_started = anyio.Event()

    async def other() -> None:
        other_started.set()
        await anyio.sleep_forever()

    body_finished = False
    with capture_logs() as logs, capture_events() as events:
        async with Supervisor("app") as sup:
            bystander = await sup.spawn(other)
            await other_started.wait()
            svc = await sup.start_service(
                _always_crash, name="consumer", max_restarts=1, give_up="shutdown"
            )
            with anyio.fail_after(10):
                await anyio.sleep_forever()  # woken by the give-up
            body_finished = True
    assert not body_finished
    assert sup.closed
    assert svc.task.state is TaskState.FAILED
    assert bystander.state is TaskState.CANCELLED
    assert bystander.cancel_reason == "service 'consumer' gave up"
    with pytest.raises(SupervisorClosed):
        await sup.spawn(anyio.sleep, 0)
    assert _of(events, svc.task.task_id)[-2:] == ["service:gave_up", "task:failed"]
    (line,) = _lines(logs, "service:gave_up")
    assert line["give_up"] == "shutdown"
    _check_totals(sup)


async def test_give_up_shutdown_in_hook_form() -> None:
    """Hook form: the host keeps running, spawns are refused, shutdown() works."""
    sup = Supervisor("app")
    await sup.startup()
    with capture_logs():
        svc = await sup.start_service(_always_crash, max_restarts=0, give_up="shutdown")
        with anyio.fail_after(10):
            await svc.task.wait_done()
        assert not sup.running
        with pytest.raises(SupervisorClosed):
            await sup.spawn(anyio.sleep, 0)
        with pytest.raises(SupervisorClosed):
            await sup.start_service(_always_crash)
        report = await sup.shutdown()  # no re-raise: giving up is not fatal
    assert report.cancelled == ()
    assert svc.task.state is TaskState.FAILED


# -- cancellation ----------------------------------------------------------


async def test_shutdown_cancels_a_running_service_without_restart() -> None:
    """At the shutdown deadline a service is cancelled like any task."""
    flaky = Flaky(0)
    with capture_logs() as logs, capture_events() as events:
        sup = Supervisor("app")
        await sup.startup()
        svc = await sup.start_service(flaky)
        with anyio.fail_after(10):
            await flaky.up.wait()
        report = await sup.shutdown(timeout=0)
    assert report.cancelled == (svc.task,)
    assert svc.task.state is TaskState.CANCELLED
    assert svc.task.cancel_reason == "shutdown"
    assert flaky.runs == 1
    assert _of(events, svc.task.task_id) == ["task:started", "task:cancelled"]
    assert not _lines(logs, "service:restarting")


async def test_shutdown_stops_services_first_without_waiting_or_restarting() -> None:
    """Services are cancelled as shutdown begins, not drained, and never restarted."""
    up = anyio.Event()
    drained = anyio.Event()
    runs = 0

    async def consumer() -> None:
        nonlocal runs
        runs += 1
        up.set()
        try:
            await anyio.sleep_forever()
        finally:
            drained.set()  # stopped before the drain wait, not at the deadline

    async def crashes_when_cancelled() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            raise OSError("lost the connection while closing")

    with capture_logs() as logs:
        sup = Supervisor("app")
        await sup.startup()
        svc = await sup.start_service(consumer)
        crashing = await sup.start_service(crashes_when_cancelled)
        with anyio.fail_after(10):
            await up.wait()
            await anyio.wait_all_tasks_blocked()  # crashing is in its body too
        t0 = anyio.current_time()
        report = await sup.shutdown(timeout=30)
        elapsed = anyio.current_time() - t0
    assert elapsed < 5  # the 30 s drain was not waited for
    assert drained.is_set()
    assert runs == 1
    assert svc.task.state is TaskState.CANCELLED
    assert svc.task.cancel_reason == "shutdown"
    assert crashing.task.state is TaskState.FAILED  # its error is worth seeing
    assert report.cancelled == (svc.task,)
    assert report.services == (svc.task,)
    assert report.completed == 0
    assert not _lines(logs, "service:restarting")


async def test_stopping_services_is_a_clean_shutdown() -> None:
    """Services stopped as planned are not "cancelled at the deadline" noise."""
    flaky = Flaky(0)
    stuck = anyio.Event()
    with capture_logs() as logs:
        sup = Supervisor("app")
        await sup.startup()
        svc = await sup.start_service(flaky)
        with anyio.fail_after(10):
            await flaky.up.wait()
        report = await sup.shutdown(timeout=5)
    assert report.clean
    assert (report.cancelled, report.services) == ((svc.task,), (svc.task,))
    assert report.cancelled_at_deadline == 0
    [line] = _lines(logs, "supervisor:shutdown")
    assert line["log_level"] == "info"
    assert (line["cancelled_at_deadline"], line["services_stopped"]) == (0, 1)

    # A task cancelled at the deadline beside a service still warns.
    with capture_logs() as logs:
        sup = Supervisor("app")
        await sup.startup()
        svc = await sup.start_service(Flaky(0))
        task = await sup.spawn(stuck.wait)
        report = await sup.shutdown(timeout=0.01)
    assert not report.clean
    assert report.cancelled_at_deadline == 1
    assert set(report.cancelled) == {svc.task, task}
    [line] = _lines(logs, "supervisor:shutdown")
    assert line["log_level"] == "warning"
    assert (line["cancelled_at_deadline"], line["services_stopped"]) == (1, 1)


async def test_cancel_stops_a_service_without_restart() -> None:
    """Service.cancel() / task.cancel() end it CANCELLED; never restarted."""
    flaky = Flaky(0)
    with capture_logs() as logs:
        async with Supervisor("app") as sup:
            svc = await sup.start_service(flaky)
            with anyio.fail_after(10):
                await flaky.up.wait()
            assert svc.task.cancel("config reload")
            assert not svc.cancel("again")
            with anyio.fail_after(10):
                await svc.task.wait_done()
    assert svc.task.state is TaskState.CANCELLED
    assert svc.task.cancel_reason == "config reload"
    assert flaky.runs == 1
    assert not _lines(logs, "service:restarting")


async def test_services_lists_started_services_running_or_ended() -> None:
    """sup.services: every handle start_service() returned, oldest first."""
    first, second = Flaky(0), Flaky(0)
    sup = Supervisor("app")
    assert sup.services == ()
    async with sup:
        a = await sup.start_service(first, name="a")
        b = await sup.start_service(second, name="b")
        assert sup.services == (a, b)
        with anyio.fail_after(10):
            await first.up.wait()
        a.cancel("done with it")
        with anyio.fail_after(10):
            await a.task.wait_done()
        assert sup.services == (a, b)  # ended, still remembered
        assert [s.task.state for s in sup.services] == [
            TaskState.CANCELLED,
            TaskState.RUNNING,
        ]
    assert sup.services == (a, b)  # still readable after shutdown


async def test_swallowed_cancellation_does_not_restart() -> None:
    """A run that catches its cancellation and returns is not restarted."""
    runs = 0
    up = anyio.Event()

    async def stubborn() -> None:
        nonlocal runs
        runs += 1
        try:
            up.set()
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            return

    with capture_logs():
        async with Supervisor("app") as sup:
            svc = await sup.start_service(stubborn)
            with anyio.fail_after(10):
                await up.wait()
            svc.cancel("stop")
            with anyio.fail_after(10):
                await svc.task.wait_done()
    assert runs == 1
    assert svc.task.state is TaskState.CANCELLED


async def test_error_raised_while_cancelled_is_not_restarted() -> None:
    """A run that turns its cancellation into an error ends FAILED, no restart."""
    runs = 0
    up = anyio.Event()

    async def cleanup_fails() -> None:
        nonlocal runs
        runs += 1
        try:
            up.set()
            await anyio.sleep_forever()
        finally:
            raise RuntimeError("cleanup failed")

    with capture_logs():
        async with Supervisor("app") as sup:
            svc = await sup.start_service(cleanup_fails)
            with anyio.fail_after(10):
                await up.wait()
            svc.cancel("stop")
            with anyio.fail_after(10):
                await svc.task.wait_done()
    assert runs == 1
    assert svc.task.state is TaskState.FAILED
    assert isinstance(svc.task.error, RuntimeError)


async def test_fatal_error_in_a_service_is_not_restarted() -> None:
    """SystemExit is not a crash to restart: the record fails, shutdown re-raises."""
    runs = 0

    async def exits() -> None:
        nonlocal runs
        runs += 1
        raise SystemExit(4)

    sup = Supervisor("app")
    await sup.startup()
    with capture_logs() as logs:
        svc = await sup.start_service(exits, max_restarts=5)
        with anyio.fail_after(10):
            await svc.task.wait_done()
        with pytest.raises(SystemExit):
            await sup.shutdown()
    assert runs == 1
    assert svc.task.state is TaskState.FAILED
    assert not _lines(logs, "service:restarting")


# -- context, limits -------------------------------------------------------

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")


async def test_caller_contextvars_reach_every_run() -> None:
    """Each run sees the caller's contextvars, and so do its log lines."""
    seen: list[str] = []
    up = anyio.Event()

    async def service() -> None:
        seen.append(_request_id.get("missing"))
        if len(seen) < 2:
            raise OSError("first run fails")
        up.set()
        await anyio.sleep_forever()

    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        async with Supervisor("app", shutdown_timeout=0) as sup:
            token = _request_id.set("boot-1")
            structlog.contextvars.bind_contextvars(boot="b-1")
            try:
                await sup.start_service(service)
            finally:
                _request_id.reset(token)
                structlog.contextvars.unbind_contextvars("boot")
            with anyio.fail_after(10):
                await up.wait()
    assert seen == ["boot-1", "boot-1"]
    (line,) = _lines(logs, "service:restarting")
    assert line["boot"] == "b-1"


async def test_services_do_not_take_concurrency_slots() -> None:
    """A service runs outside max_concurrency, so short tasks still get slots."""
    flaky = Flaky(0)
    async with Supervisor(
        "app", shutdown_timeout=0, max_concurrency=1, max_pending=1
    ) as sup:
        svc = await sup.start_service(flaky)
        with anyio.fail_after(10):
            await flaky.up.wait()
            task = await sup.spawn(anyio.sleep, 0)
            await task.wait()
        assert svc.task.state is TaskState.RUNNING
        _check_totals(sup)


# -- bad input -------------------------------------------------------------


async def _ok_service() -> None:
    await anyio.sleep_forever()


async def _needs_two(a: int, b: int) -> None:
    await anyio.sleep_forever()


async def _keyword_only(*, url: str) -> None:
    await anyio.sleep_forever()


def _sync_service() -> None:
    """A plain function: not allowed as a service."""


async def _agen() -> Any:
    yield 1


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        pytest.param(
            lambda s: s.start_service(_ok_service, restart="always"),
            ValueError,
            r"start_service\(restart=\.\.\.\) must be one of 'permanent', "
            "'transient', 'temporary'",
            id="restart",
        ),
        pytest.param(
            lambda s: s.start_service(_ok_service, give_up="crash"),
            ValueError,
            r"start_service\(give_up=\.\.\.\) must be one of 'log', 'shutdown'",
            id="give_up",
        ),
        pytest.param(
            lambda s: s.start_service(_ok_service, max_restarts=-1),
            ValueError,
            r"max_restarts=\.\.\.\) must be an int >= 0",
            id="max_restarts-negative",
        ),
        pytest.param(
            lambda s: s.start_service(_ok_service, max_restarts=1.5),
            TypeError,
            r"max_restarts=\.\.\.\) must be an int >= 0",
            id="max_restarts-float",
        ),
        pytest.param(
            lambda s: s.start_service(_ok_service, max_restarts=True),
            TypeError,
            r"max_restarts=\.\.\.\) must be an int >= 0",
            id="max_restarts-bool",
        ),
        pytest.param(
            lambda s: s.start_service(_ok_service, period=0),
            ValueError,
            r"period=\.\.\.\) must be a positive number of seconds",
            id="period-zero",
        ),
        pytest.param(
            lambda s: s.start_service(_ok_service, period="5"),
            TypeError,
            r"period=\.\.\.\) must be a number of seconds",
            id="period-str",
        ),
        pytest.param(
            lambda s: s.start_service(_ok_service, backoff=-0.1),
            ValueError,
            r"backoff=\.\.\.\) must be >= 0 seconds",
            id="backoff-negative",
        ),
        pytest.param(
            lambda s: s.start_service(_ok_service, backoff=math.inf),
            ValueError,
            "must be a finite number of seconds",
            id="backoff-inf",
        ),
        pytest.param(
            lambda s: s.start_service(_ok_service, name=""),
            ValueError,
            r"start_service\(name=\.\.\.\) must be a non-empty str",
            id="name",
        ),
        pytest.param(
            lambda s: s.start_service("consumer"),
            TypeError,
            "needs an `async def` function",
            id="not-callable",
        ),
        pytest.param(
            lambda s: s.start_service(_ok_service()),
            TypeError,
            "not an awaitable",
            id="coroutine-object",
        ),
        pytest.param(
            lambda s: s.start_service(_sync_service),
            TypeError,
            "services must be `async def`",
            id="sync-function",
        ),
        pytest.param(
            lambda s: s.start_service(_agen),
            TypeError,
            "generator function, which a service cannot run",
            id="async-generator",
        ),
        pytest.param(
            lambda s: s.start_service(_needs_two, 1),
            TypeError,
            "missing a required argument: 'b'",
            id="missing-arg",
        ),
        pytest.param(
            lambda s: s.start_service(_keyword_only),
            TypeError,
            r"functools.partial\(func, key=value\)",
            id="keyword-only",
        ),
    ],
)
async def test_bad_input_is_refused_at_the_call(
    call: Callable[[Supervisor], Any], error: type[Exception], match: str
) -> None:
    """Bad options or functions raise at start_service, and nothing is spawned."""
    async with Supervisor("app") as sup:
        with pytest.raises(error, match=match):
            await call(sup)
        assert sup.stats().spawned == 0


async def test_start_service_needs_a_running_supervisor() -> None:
    """Before startup: SupervisorNotStarted; after shutdown: SupervisorClosed."""
    sup = Supervisor("app")
    with pytest.raises(SupervisorNotStarted):
        await sup.start_service(_ok_service)
    async with sup:
        pass
    with pytest.raises(SupervisorClosed):
        await sup.start_service(_ok_service)
