"""nursery-supervisor: one application-scoped nursery that owns every background task.

A :class:`Supervisor` runs background work for a web app on asyncio or trio,
records every task's state, logs every failure with its traceback through
structlog, emits ``task:*`` events, and at lifespan shutdown drains, then
cancels, accounting for every task in a :class:`ShutdownReport`.
"""

from __future__ import annotations

from ._compat import BackgroundTaskManager, add_background_task
from ._records import ShutdownReport, SupervisorStats
from ._registry import bind, current_supervisor
from ._services import Service
from ._spawning import Spawner
from ._supervisor import Supervisor
from ._task import BackgroundTask, Retry, TaskOptions, TaskState
from .exceptions import (
    Overloaded,
    ServiceFailedToStart,
    SupervisorClosed,
    SupervisorError,
    SupervisorNotStarted,
    TaskCancelled,
    TaskFailed,
)

__all__ = [
    "BackgroundTask",
    "BackgroundTaskManager",
    "Overloaded",
    "Retry",
    "Service",
    "ServiceFailedToStart",
    "ShutdownReport",
    "Spawner",
    "Supervisor",
    "SupervisorClosed",
    "SupervisorError",
    "SupervisorNotStarted",
    "SupervisorStats",
    "TaskCancelled",
    "TaskFailed",
    "TaskOptions",
    "TaskState",
    "add_background_task",
    "bind",
    "current_supervisor",
]
