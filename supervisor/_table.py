"""``Supervisor.tasks``: one read-only mapping over live tasks and the history."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ._task import BackgroundTask, Job

__all__ = ["TaskTable"]

Record = BackgroundTask[Any]


class TaskTable(Mapping[str, Record]):
    """Read-only view over live tasks plus the bounded history.

    It reads the runner's two tables in place; ``expire`` drops history
    entries past their TTL before any lookup that could return one.
    """

    __slots__ = ("_expire", "_history", "_live")

    def __init__(
        self,
        live: Mapping[str, Job],
        history: Mapping[str, Record],
        expire: Callable[[], None],
    ) -> None:
        self._live = live
        self._history = history
        self._expire = expire

    def __getitem__(self, task_id: str) -> Record:
        job = self._live.get(task_id)
        if job is not None:
            return job.record
        self._expire()
        return self._history[task_id]

    def __iter__(self) -> Iterator[str]:
        self._expire()
        yield from list(self._live)
        yield from list(self._history)

    def __len__(self) -> int:
        self._expire()
        return len(self._live) + len(self._history)

    def __contains__(self, task_id: object) -> bool:
        if task_id in self._live:
            return True
        self._expire()
        return task_id in self._history

    def __repr__(self) -> str:
        return f"<supervisor tasks live={len(self._live)} history={len(self._history)}>"
