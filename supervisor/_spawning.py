"""Spawning with per-task options: the :class:`Spawner` view."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

import attrs

from ._options import TaskOptions
from ._records import made_here

if TYPE_CHECKING:
    from ._task import BackgroundTask

__all__ = ["Spawner", "make_spawner"]

P = ParamSpec("P")
T = TypeVar("T")


@made_here("get one from sup.options(...)")
@attrs.frozen
class Spawner:
    """Spawns with fixed :class:`TaskOptions`; made by :meth:`Supervisor.options`.

    Typed like the supervisor's own methods: a checker matches the arguments
    against ``func`` and knows the type of ``task.wait()``.
    """

    task_options: TaskOptions
    # The supervisor's own spawn functions, bound: the spawner is a view of
    # one supervisor and needs nothing else of it.
    _spawn: Callable[..., Any] = attrs.field(alias="spawn")
    _spawn_nowait: Callable[..., Any] = attrs.field(alias="spawn_nowait")
    _spawn_threadsafe: Callable[..., Any] = attrs.field(alias="spawn_threadsafe")

    @classmethod
    def _create(cls, *args: Any) -> Spawner:
        raise NotImplementedError  # replaced by made_here

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
        return await self._spawn(func, args, kwargs, self.task_options)  # type: ignore[no-any-return]

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
        return self._spawn_nowait(func, args, kwargs, self.task_options)  # type: ignore[no-any-return]

    def spawn_threadsafe(
        self, func: Callable[P, Any], /, *args: P.args, **kwargs: P.kwargs
    ) -> str:
        """:meth:`Supervisor.spawn_threadsafe` with these options."""
        return self._spawn_threadsafe(func, args, kwargs, self.task_options)  # type: ignore[no-any-return]


def make_spawner(options: TaskOptions, *spawn_functions: Callable[..., Any]) -> Spawner:
    """A spawner for ``options`` over a supervisor's three spawn functions."""
    return Spawner._create(options, *spawn_functions)
