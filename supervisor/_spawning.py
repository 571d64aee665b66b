"""Spawning with per-task options: the :class:`Spawner` view."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

import attrs

from ._task import BackgroundTask, TaskOptions

if TYPE_CHECKING:
    from ._supervisor import Supervisor

__all__ = ["Spawner"]

P = ParamSpec("P")
T = TypeVar("T")


@attrs.frozen
class Spawner:
    """Spawns with fixed :class:`TaskOptions`; made by :meth:`Supervisor.options`.

    Typed like the supervisor's own methods: a checker matches the arguments
    against ``func`` and knows the type of ``task.wait()``.
    """

    supervisor: Supervisor
    task_options: TaskOptions

    @overload
    async def spawn(
        self,
        func: Callable[P, Coroutine[Any, Any, T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> BackgroundTask[T]: ...
    @overload
    async def spawn(
        self, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> BackgroundTask[T]: ...
    async def spawn(
        self, func: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> BackgroundTask[Any]:
        """:meth:`Supervisor.spawn` with these options."""
        return await self.supervisor._spawn(func, args, kwargs, self.task_options)

    @overload
    def spawn_nowait(
        self,
        func: Callable[P, Coroutine[Any, Any, T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> BackgroundTask[T]: ...
    @overload
    def spawn_nowait(
        self, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> BackgroundTask[T]: ...
    def spawn_nowait(
        self, func: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> BackgroundTask[Any]:
        """:meth:`Supervisor.spawn_nowait` with these options."""
        return self.supervisor._spawn_nowait(func, args, kwargs, self.task_options)

    def spawn_threadsafe(
        self, func: Callable[P, Any], /, *args: P.args, **kwargs: P.kwargs
    ) -> str:
        """:meth:`Supervisor.spawn_threadsafe` with these options."""
        return self.supervisor._spawn_threadsafe(func, args, kwargs, self.task_options)
