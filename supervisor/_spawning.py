"""Spawning with per-task options: the :class:`Spawner` view."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from ._task import BackgroundTask, TaskOptions

if TYPE_CHECKING:
    from ._supervisor import Supervisor

__all__ = ["Spawner"]


@attrs.frozen
class Spawner:
    """Spawns with fixed :class:`TaskOptions`; made by :meth:`Supervisor.options`."""

    supervisor: Supervisor
    task_options: TaskOptions

    async def spawn(
        self, func: Any, /, *args: Any, **kwargs: Any
    ) -> BackgroundTask[Any]:
        """:meth:`Supervisor.spawn` with these options."""
        return await self.supervisor._spawn(func, args, kwargs, self.task_options)

    def spawn_nowait(
        self, func: Any, /, *args: Any, **kwargs: Any
    ) -> BackgroundTask[Any]:
        """:meth:`Supervisor.spawn_nowait` with these options."""
        return self.supervisor._spawn_nowait(func, args, kwargs, self.task_options)

    def spawn_threadsafe(self, func: Any, /, *args: Any, **kwargs: Any) -> str:
        """:meth:`Supervisor.spawn_threadsafe` with these options."""
        return self.supervisor._spawn_threadsafe(func, args, kwargs, self.task_options)
