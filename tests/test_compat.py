"""The seed's API (qakeapi.core.background) running on a supervisor."""

from __future__ import annotations

from datetime import datetime

import anyio
import pytest

from supervisor import (
    BackgroundTaskManager,
    Supervisor,
    SupervisorError,
    SupervisorNotStarted,
    add_background_task,
)

STATUS_KEYS = {"task_id", "status", "created_at", "started_at", "completed_at", "error"}


async def send_email(email: str, subject: str, body: str) -> str:
    """The seed's welcome email task."""
    await anyio.lowlevel.checkpoint()
    return f"sent {subject} to {email}"


async def calculate_result(data: list[int]) -> dict[str, int]:
    """The seed's calculation whose result the handler reads."""
    await anyio.lowlevel.checkpoint()
    return {"result": sum(data)}


def generate_report(data: dict[str, int]) -> str:
    """The seed's sync task, run in a worker thread."""
    return f"report of {len(data)} items"


async def risky_task(data: str) -> None:
    """A task that fails, as in the seed's error-handling section."""
    raise RuntimeError(f"cannot process {data}")


async def test_add_background_task_runs_on_the_current_supervisor() -> None:
    """The seed's one-liner spawns on the running supervisor and returns the id."""
    async with Supervisor("app") as sup:
        task_id = await add_background_task(
            send_email, email="a@example.com", subject="Welcome", body="Hi"
        )
        assert isinstance(task_id, str)
        report_id = await add_background_task(generate_report, {"a": 1})
        await sup.wait_idle()
        assert sup.tasks[task_id].result == "sent Welcome to a@example.com"
        assert sup.tasks[report_id].result == "report of 1 items"


async def test_add_background_task_without_supervisor_explains_how_to_start_one() -> (
    None
):
    """With nothing running the error tells the user to start one in the lifespan."""
    with pytest.raises(SupervisorNotStarted, match="lifespan"):
        await add_background_task(send_email, "a", "b", "c")


async def test_add_background_task_with_custom_id_and_reuse() -> None:
    """task_id is reserved; a live id is refused, a finished one may be reused."""
    release = anyio.Event()
    async with Supervisor("app") as sup:
        assert await add_background_task(release.wait, task_id="job") == "job"
        with pytest.raises(SupervisorError, match="already used by a live task"):
            await add_background_task(release.wait, task_id="job")
        release.set()
        await sup.wait_idle()
        assert await add_background_task(anyio.sleep, 0, task_id="job") == "job"
        await sup.wait_idle()
        assert sup.stats().spawned == 2


async def test_manager_wait_true_returns_id_and_result() -> None:
    """add_task(wait=True) returns the id; .tasks[id].result holds the value."""
    manager = BackgroundTaskManager()  # module-level in the seed: before any supervisor
    async with Supervisor("app"):
        task_id = await manager.add_task(calculate_result, [1, 2, 3], wait=True)
        assert manager.tasks[task_id].result == {"result": 6}
        status = manager.get_task_status(task_id)
    assert set(status) == STATUS_KEYS
    assert status["status"] == "completed"
    assert status["error"] is None
    for key in ("created_at", "started_at", "completed_at"):
        assert datetime.fromisoformat(status[key]).tzinfo is not None


async def test_manager_wait_true_returns_id_for_failed_task_too() -> None:
    """Like QakeAPI, waiting on a failing task returns its id; status says failed."""
    async with Supervisor("app") as sup:
        manager = BackgroundTaskManager(supervisor=sup)
        task_id = await manager.add_task(risky_task, "x", wait=True)
        status = manager.get_task_status(task_id)
        task = manager.get_task(task_id)
    assert status["status"] == "failed"
    assert status["error"] == "cannot process x"
    assert task is not None
    assert isinstance(task.error, RuntimeError)


async def test_manager_status_for_pending_running_cancelled_and_unknown() -> None:
    """Statuses map to QakeAPI's words; unknown ids are not_found."""
    started = anyio.Event()

    async def hold() -> None:
        started.set()
        await anyio.sleep_forever()

    async with Supervisor("app", shutdown_timeout=0) as sup:
        manager = BackgroundTaskManager(sup)
        running_id = await manager.add_task(hold)
        assert manager.get_task_status(running_id)["status"] == "pending"
        await started.wait()
        assert manager.get_task_status(running_id)["status"] == "running"
        assert manager.get_task_status(running_id)["completed_at"] is None
        assert manager.get_task_status("nope") == {"status": "not_found"}
        assert manager.get_task("nope") is None
    assert manager.get_task_status(running_id)["status"] == "cancelled"


async def test_manager_with_explicit_supervisor_among_several() -> None:
    """With two supervisors running, a manager bound to one uses that one."""
    async with Supervisor("one") as one, Supervisor("two") as two:
        with pytest.raises(SupervisorError, match="several supervisors"):
            await add_background_task(anyio.sleep, 0)
        manager = BackgroundTaskManager(supervisor=two)
        task_id = await manager.add_task(anyio.sleep, 0, wait=True)
        assert task_id in two.tasks
        assert task_id not in one.tasks
