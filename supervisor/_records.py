"""Frozen value records the supervisor hands out: statistics and shutdown reports."""

from __future__ import annotations

from typing import Any

import attrs

from ._task import BackgroundTask

__all__ = ["ShutdownReport", "SupervisorStats"]


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

    def totals(self) -> dict[str, int]:
        """The since-startup totals, as log fields."""
        return {
            "spawned": self.spawned,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "cancelled": self.cancelled,
        }

    @property
    def live(self) -> int:
        """Tasks not yet in a terminal state (``pending + running``)."""
        return self.pending + self.running


@attrs.frozen
class ShutdownReport:
    """What :meth:`Supervisor.shutdown` did with the work it found.

    ``completed`` counts tasks that reached a terminal state (any of them)
    during the drain; ``cancelled`` lists every task cancelled at the
    deadline, including ``PENDING`` ones that never started; ``abandoned`` is
    the subset of ``cancelled`` whose worker threads were still running
    (Python cannot interrupt a thread; they are reported, not waited for).
    ``shielded`` lists shielded tasks that shutdown waited for past the
    deadline.
    """

    completed: int = 0
    cancelled: tuple[BackgroundTask[Any], ...] = ()
    abandoned: tuple[BackgroundTask[Any], ...] = ()
    shielded: tuple[BackgroundTask[Any], ...] = ()
    duration_s: float = 0.0

    @property
    def clean(self) -> bool:
        """True when nothing had to be cancelled or abandoned."""
        return not self.cancelled and not self.abandoned
