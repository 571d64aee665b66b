"""Lifecycle: hook-form startup/shutdown, `async with`, misuse errors, registry."""

from __future__ import annotations

import anyio
import pytest

from supervisor import (
    ShutdownReport,
    Supervisor,
    SupervisorError,
    SupervisorNotStarted,
    TaskState,
    bind,
    current_supervisor,
)


async def test_async_with_runs_and_closes() -> None:
    """`async with` starts the supervisor, and leaving it shuts it down."""
    sup = Supervisor("app")
    assert not sup.running
    async with sup as entered:
        assert entered is sup
        assert sup.running
        task = await sup.spawn(anyio.sleep, 0)
    assert sup.closed
    assert task.state is TaskState.SUCCEEDED


async def test_hook_form_startup_is_idempotent_and_shutdown_returns_same_report() -> (
    None
):
    """startup() twice is a no-op; shutdown() twice returns the same report."""
    sup = Supervisor("app")
    await sup.startup()
    await sup.startup()
    task = await sup.spawn(anyio.sleep, 0)
    report = await sup.shutdown()
    assert isinstance(report, ShutdownReport)
    assert task.state is TaskState.SUCCEEDED
    assert await sup.shutdown() is report


async def test_startup_from_another_task_is_a_noop() -> None:
    """QakeAPI calls startup hooks again from a request task: nothing happens."""
    sup = Supervisor("app")
    await sup.startup()
    async with anyio.create_task_group() as tg:
        tg.start_soon(sup.startup)
    assert sup.running
    await sup.shutdown()


async def test_shutdown_before_startup_returns_empty_report_then_startup_fails() -> (
    None
):
    """A never-started supervisor shuts down to an empty report and stays closed."""
    sup = Supervisor("app")
    report = await sup.shutdown()
    assert (report.completed, report.cancelled, report.abandoned) == (0, (), ())
    assert report.clean
    with pytest.raises(SupervisorError, match="single-use"):
        await sup.startup()


async def test_startup_after_shutdown_raises() -> None:
    """A supervisor is single-use; the error says to create a new one."""
    sup = Supervisor("app")
    async with sup:
        pass
    with pytest.raises(SupervisorError, match="new Supervisor"):
        await sup.startup()


async def test_async_with_on_started_supervisor_raises() -> None:
    """Entering `async with` on a started supervisor is misuse."""
    sup = Supervisor("app")
    await sup.startup()
    with pytest.raises(SupervisorError, match="already running"):
        async with sup:
            pass
    await sup.shutdown()


async def test_shutdown_from_another_task_raises_then_works_from_host() -> None:
    """shutdown() must run in startup()'s task; the error says so, changes nothing."""
    sup = Supervisor("app")
    await sup.startup()
    errors: list[BaseException] = []

    async def other() -> None:
        try:
            await sup.shutdown()
        except SupervisorError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(other)
    assert len(errors) == 1
    assert "same lifespan task" in str(errors[0])
    assert sup.running
    await sup.shutdown()
    assert sup.closed


async def test_shutdown_inside_own_cancel_scope_raises_then_works() -> None:
    """Wrapping shutdown() in move_on_after breaks the nesting rule: SupervisorError."""
    sup = Supervisor("app")
    await sup.startup()
    with pytest.raises(SupervisorError, match="timeout=") as info:
        with anyio.move_on_after(5):
            await sup.shutdown()
    assert "move_on_after" in str(info.value)
    assert sup.running
    report = await sup.shutdown(timeout=1)
    assert report.cancelled == ()
    assert sup.closed


async def test_shutdown_rejects_negative_timeout_at_the_call() -> None:
    """shutdown(timeout=-1) is a ValueError and leaves the supervisor running."""
    async with Supervisor("app") as sup:
        with pytest.raises(ValueError, match="timeout"):
            await sup.shutdown(timeout=-1)
        assert sup.running


async def test_repr_shows_public_path_and_state() -> None:
    """The repr names the class by its public path and shows live counts."""
    sup = Supervisor("app")
    assert repr(sup) == "<supervisor.Supervisor 'app' new>"
    async with sup:
        assert repr(sup) == "<supervisor.Supervisor 'app' running=0 pending=0 running>"
    assert repr(sup).endswith("closed>")


async def test_current_supervisor_finds_the_only_running_one() -> None:
    """With one supervisor running, current_supervisor() returns it."""
    with pytest.raises(SupervisorNotStarted, match="lifespan"):
        current_supervisor()
    async with Supervisor("only") as sup:
        assert current_supervisor() is sup
    with pytest.raises(SupervisorNotStarted):
        current_supervisor()


async def test_current_supervisor_with_several_needs_a_binding() -> None:
    """With two running, the unbound lookup names both; bind() picks one."""
    async with Supervisor("one") as one, Supervisor("two") as two:
        with pytest.raises(SupervisorError, match="'one', 'two'"):
            current_supervisor()
        with bind(two):
            assert current_supervisor() is two
        with bind(one):
            task = await one.spawn(current_supervisor)  # runs in a thread
            assert await task.wait() is one


async def test_stats_before_startup_are_zero() -> None:
    """stats() works on a new supervisor and reports nothing."""
    stats = Supervisor("app").stats()
    assert (stats.pending, stats.running, stats.spawned) == (0, 0, 0)
    await anyio.lowlevel.checkpoint()
