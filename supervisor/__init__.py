"""nursery-supervisor: one application-scoped nursery that owns every background task.

A :class:`Supervisor` runs background work for a web app on asyncio or trio,
records every task's state, logs every failure with its traceback through
structlog, emits ``task:*`` events, and at lifespan shutdown drains, then
cancels, accounting for every task in a :class:`ShutdownReport`.

The names below are loaded on first use, so that ``python -m supervisor
failures`` (which reads log files) imports none of the runtime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from ._compat import BackgroundTaskManager, add_background_task
    from ._config import SupervisorConfig
    from ._events import TaskEvent
    from ._options import Retry, TaskOptions
    from ._records import ShutdownReport, SupervisorStats
    from ._registry import bind, current_supervisor
    from ._services import Service, ServiceOptions
    from ._spawning import Spawner
    from ._supervisor import Supervisor
    from ._task import BackgroundTask, TaskState
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
    "ServiceOptions",
    "ShutdownReport",
    "Spawner",
    "Supervisor",
    "SupervisorClosed",
    "SupervisorConfig",
    "SupervisorError",
    "SupervisorNotStarted",
    "SupervisorStats",
    "TaskCancelled",
    "TaskEvent",
    "TaskFailed",
    "TaskOptions",
    "TaskState",
    "__version__",
    "add_background_task",
    "bind",
    "current_supervisor",
]

# Public name -> the private module that defines it.
_HOMES = {
    "BackgroundTask": "_task",
    "BackgroundTaskManager": "_compat",
    "Overloaded": "exceptions",
    "Retry": "_options",
    "Service": "_services",
    "ServiceFailedToStart": "exceptions",
    "ServiceOptions": "_services",
    "ShutdownReport": "_records",
    "Spawner": "_spawning",
    "Supervisor": "_supervisor",
    "SupervisorClosed": "exceptions",
    "SupervisorConfig": "_config",
    "SupervisorError": "exceptions",
    "SupervisorNotStarted": "exceptions",
    "SupervisorStats": "_records",
    "TaskCancelled": "exceptions",
    "TaskEvent": "_events",
    "TaskFailed": "exceptions",
    "TaskOptions": "_options",
    "TaskState": "_task",
    "add_background_task": "_compat",
    "bind": "_registry",
    "current_supervisor": "_registry",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'supervisor' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    if isinstance(value, type):
        # Shown, pickled and documented under its public path.
        value.__module__ = __name__
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
