"""Drop-in replacements for QakeAPI's ``qakeapi.core.background`` (SPEC 4).

Same names, same call shapes, same status dictionaries, so that the seed's
handlers keep working after changing one import line, but every task now
runs on a supervisor: logged when it fails, bounded in memory, cancelled and
accounted for at shutdown, on asyncio and trio.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ._registry import current_supervisor
from ._task import BackgroundTask, TaskState

if TYPE_CHECKING:
    from ._supervisor import Supervisor

__all__ = ["BackgroundTaskManager", "add_background_task"]

# QakeAPI's words for our states.
_STATUS = {
    TaskState.PENDING: "pending",
    TaskState.RUNNING: "running",
    TaskState.SUCCEEDED: "completed",
    TaskState.FAILED: "failed",
    TaskState.CANCELLED: "cancelled",
}


async def add_background_task(
    func: Callable[..., Any], /, *args: Any, task_id: str | None = None, **kwargs: Any
) -> str:
    """Run ``func(*args, **kwargs)`` on :func:`current_supervisor`; return its id.

    Like QakeAPI's, ``task_id`` is reserved for the task's id; every other
    argument goes to ``func``.
    """
    return await BackgroundTaskManager().add_task(
        func, *args, task_id=task_id, **kwargs
    )


class BackgroundTaskManager:
    """QakeAPI's task manager, backed by a supervisor.

    With ``supervisor=None`` each call uses :func:`current_supervisor`, so a
    module-level ``task_manager = BackgroundTaskManager()`` (as in QakeAPI's
    docs) works before any supervisor exists. ``tasks`` holds live tasks and
    the supervisor's bounded history, not every task ever run.
    """

    __slots__ = ("_supervisor",)

    def __init__(self, supervisor: Supervisor | None = None) -> None:
        self._supervisor = supervisor

    @property
    def supervisor(self) -> Supervisor:
        """The supervisor this manager spawns on (resolved at each call)."""
        return (
            self._supervisor if self._supervisor is not None else current_supervisor()
        )

    @property
    def tasks(self) -> Mapping[str, BackgroundTask[Any]]:
        """Read-only mapping of task id to record (``.tasks[id].result``)."""
        return self.supervisor.tasks

    async def add_task(
        self,
        func: Callable[..., Any],
        /,
        *args: Any,
        task_id: str | None = None,
        wait: bool = False,
        **kwargs: Any,
    ) -> str:
        """Spawn ``func``; with ``wait=True`` also wait for it to end.

        Returns the task id whether the task succeeded or failed, like
        QakeAPI; read the outcome from ``tasks[task_id]`` or
        :meth:`get_task_status`.
        """
        sup = self.supervisor
        spawner = sup if task_id is None else sup.options(task_id=task_id)
        task = await spawner.spawn(func, *args, **kwargs)
        if wait:
            await task.wait_done()
        return task.task_id

    def get_task(self, task_id: str) -> BackgroundTask[Any] | None:
        """The task's record, or None if unknown (or forgotten by the history)."""
        return self.supervisor.get(task_id)

    def get_task_status(self, task_id: str) -> dict[str, Any]:
        """QakeAPI's status dictionary; ``{"status": "not_found"}`` if unknown."""
        task = self.get_task(task_id)
        if task is None:
            return {"status": "not_found"}
        started, completed = task.started_at, task.completed_at
        return {
            "task_id": task.task_id,
            "status": _STATUS[task.state],
            "created_at": task.created_at.isoformat(),
            "started_at": started.isoformat() if started else None,
            "completed_at": completed.isoformat() if completed else None,
            "error": None if task.error is None else str(task.error),
        }
