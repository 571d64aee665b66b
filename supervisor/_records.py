"""Frozen value records the supervisor hands out: statistics and shutdown reports.

Records are made by the supervisor, not by callers (a ``SupervisorStats``
built by hand would be a lie about a supervisor): :func:`made_here` gives a
record class a private ``_create`` constructor and makes calling the class
itself a ``TypeError`` that says where such records come from.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

if TYPE_CHECKING:
    from ._task import BackgroundTask

__all__ = [
    "ShutdownReport",
    "SupervisorStats",
    "made_here",
    "make_report",
    "make_stats",
]

C = TypeVar("C", bound=type)


def made_here(source: str) -> Callable[[C], C]:
    """Make an attrs class constructible only through ``cls._create(...)``.

    ``source`` says where callers get such records, for the error message.
    """

    def decorate(cls: C) -> C:
        init = cls.__init__  # type: ignore[misc]
        new = object.__new__

        def _create(klass: type[Any], *args: Any, **kwargs: Any) -> Any:
            self = new(klass)
            init(self, *args, **kwargs)
            return self

        def refuse(self: Any, *args: Any, **kwargs: Any) -> None:
            raise TypeError(
                f"{cls.__qualname__} records are made by the supervisor; {source}"
            )

        cls._create = classmethod(_create)  # type: ignore[attr-defined]
        cls.__init__ = refuse  # type: ignore[misc]
        return cls

    return decorate


@made_here("read them from sup.stats()")
@attrs.frozen
class SupervisorStats:
    """A snapshot from :meth:`Supervisor.stats`.

    ``pending`` and ``running`` are counts now; the others are totals since
    startup and are never reduced when old records leave the history, so
    ``spawned == pending + running + succeeded + failed + cancelled`` holds at
    every checkpoint.
    """

    pending: int
    running: int
    spawned: int
    succeeded: int
    failed: int
    cancelled: int

    @property
    def live(self) -> int:
        """Tasks not yet in a terminal state (``pending + running``)."""
        return self.pending + self.running

    def as_dict(self) -> dict[str, int]:
        """Every count by name, JSON-ready (for a health or metrics endpoint)."""
        return {
            "pending": self.pending,
            "running": self.running,
            "spawned": self.spawned,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "cancelled": self.cancelled,
        }

    @classmethod
    def _create(cls, *args: Any) -> SupervisorStats:  # replaced by made_here
        raise NotImplementedError


@made_here("shutdown() returns one")
@attrs.frozen
class ShutdownReport:
    """What :meth:`Supervisor.shutdown` did with the work it found.

    ``completed`` counts tasks that reached a terminal state (any of them)
    during the drain; ``cancelled`` lists every task cancelled at the
    deadline, including ``PENDING`` ones that never started; ``abandoned`` is
    the subset of ``cancelled`` whose worker threads were still running
    (Python cannot interrupt a thread; they are reported, not waited for).
    ``shielded`` lists shielded tasks that shutdown waited for past the
    deadline. ``services`` is the subset of ``cancelled`` that were services
    (``start_service``), stopped as planned when shutdown began: they never
    end by themselves, so stopping them is not a sign of lost work.
    """

    completed: int = 0
    cancelled: tuple[BackgroundTask[Any], ...] = ()
    abandoned: tuple[BackgroundTask[Any], ...] = ()
    shielded: tuple[BackgroundTask[Any], ...] = ()
    duration_s: float = 0.0
    services: tuple[BackgroundTask[Any], ...] = ()

    @property
    def cancelled_at_deadline(self) -> int:
        """How many tasks other than services shutdown had to cancel."""
        return len(self.cancelled) - len(self.services)

    @property
    def clean(self) -> bool:
        """True when no task but the services had to be cancelled or abandoned."""
        return not self.cancelled_at_deadline and not self.abandoned

    @classmethod
    def _create(cls, *args: Any, **kwargs: Any) -> ShutdownReport:  # made_here
        raise NotImplementedError


def make_stats(*counts: int) -> SupervisorStats:
    """A stats record: pending, running, spawned, succeeded, failed, cancelled."""
    return SupervisorStats._create(*counts)


def make_report(**fields: Any) -> ShutdownReport:
    """A shutdown report (no fields: the empty report)."""
    return ShutdownReport._create(**fields)
