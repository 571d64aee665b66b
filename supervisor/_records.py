"""Frozen value records the supervisor hands out: statistics and shutdown reports."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from ._task import BackgroundTask

__all__ = ["ShutdownReport", "SupervisorStats", "TaskTable"]


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


class TaskTable(Mapping[str, BackgroundTask[Any]]):
    """Read-only view over live tasks plus the bounded history."""

    __slots__ = ("_history", "_live")

    def __init__(self, live: dict[str, Any], history: dict[str, Any]) -> None:
        self._live = live
        self._history = history

    def __getitem__(self, task_id: str) -> BackgroundTask[Any]:
        task = self._live.get(task_id)
        if task is None:
            task = self._history[task_id]
        return task  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[str]:
        yield from list(self._live)
        yield from list(self._history)

    def __len__(self) -> int:
        return len(self._live) + len(self._history)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._live or task_id in self._history

    def __repr__(self) -> str:
        return f"<supervisor tasks live={len(self._live)} history={len(self._history)}>"
