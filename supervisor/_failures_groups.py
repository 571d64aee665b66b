"""What ``python -m supervisor failures`` keeps per (task name, error type) group.

:mod:`supervisor._failures` folds every failure it reads into a
:class:`Group`.  Everything a group keeps is bounded, by the caps below,
because logs are attacker-influenced text and a log of any size must cost a
bounded amount of memory: strings are cut (saying how much was cut), sets of
ids are capped per group and across groups (a shared :class:`Budget`), and
the example traceback is kept as its raw log line only while that line is
small.  A cap that was reached is recorded (``*_truncated``) so that the
report can say so.  Stdlib and attrs only, and nothing from the package but
:mod:`supervisor._tracebacks`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import attrs

from ._tracebacks import as_text, render_traceback

__all__ = [
    "MAX_ALL_REQUEST_IDS",
    "MAX_ERROR",
    "MAX_REQUEST_IDS",
    "MAX_SUPERVISORS",
    "MAX_TASK_IDS",
    "MAX_TEXT",
    "MAX_TRACEBACK",
    "MIN_TIME",
    "Budget",
    "Group",
    "clip",
    "clipped",
]

# Names, ids, error types and timestamps are cut to this many characters.
MAX_TEXT = 256
MAX_ERROR = 4096
# A traceback is kept as its raw log line while the line is at most this
# long (re-decoded when printed), else rendered at once and cut.
_KEEP_LINE = 32 * 1024
MAX_TRACEBACK = 32 * 1024
# Distinct request ids listed per group.  The ids are the one per-group
# datum that grows with the log, and past a few hundred they stop helping a
# person anyway; the caps keep memory flat on logs of any size.
MAX_REQUEST_IDS = 1000
MAX_ALL_REQUEST_IDS = 20_000
MAX_SUPERVISORS = 16
# Task ids remembered (as hashes) to count distinct tasks, across groups:
# about 60 bytes each.
MAX_TASK_IDS = 200_000

MIN_TIME = datetime.min.replace(tzinfo=UTC)


def clip(text: str, limit: int) -> str:
    """*text* cut to *limit* characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit:,} more characters]"


def clipped(value: object, limit: int = MAX_TEXT) -> str | None:
    """A logged value as text (see ``as_text``), cut to *limit* characters."""
    if value.__class__ is str and len(value) <= limit:
        return value  # the common case, first
    text = as_text(value)
    return None if text is None else clip(text, limit)


@attrs.define(eq=False)
class Budget:
    """What is left of the caps shared by all groups of one scan."""

    # Factories, so that the caps are read when a scan starts.
    task_ids: int = attrs.field(factory=lambda: MAX_TASK_IDS)
    request_ids: int = attrs.field(factory=lambda: MAX_ALL_REQUEST_IDS)


@attrs.define(eq=False)
class Group:
    """What is remembered about one (task name, error type) pair.

    Only aggregates live here, so a log of any length costs one of these per
    distinct pair.  ``example_task_id``, ``last_error`` and the traceback
    all come from the same failure, the most recent one that has a
    traceback (or the most recent one, if none has), so the example task id
    and the traceback shown next to it describe the same run.

    ``count`` is failure lines; ``tasks`` is distinct task ids among them.
    The two differ when one task's failure is read twice (the same log
    given twice, overlapping rotated files), and ``repeats`` says by how
    many lines.
    """

    task_name: str
    error_type: str
    count: int = 0
    tasks: int = 0
    tasks_truncated: bool = False
    repeats: int = 0
    first_seen: str | None = None
    last_seen: str | None = None
    example_task_id: str | None = None
    last_error: str | None = None
    # Request id -> the earliest time it was seen (None: no timestamp).
    request_ids: dict[str, datetime | None] = attrs.field(factory=dict)
    request_ids_truncated: bool = False
    supervisors: dict[str, None] = attrs.field(factory=dict)
    supervisors_truncated: bool = False
    _budget: Budget = attrs.field(factory=Budget, repr=False)
    _task_ids: set[int] = attrs.field(factory=set, init=False, repr=False)
    # The example's raw log line (re-decoded when printed) or, for a line
    # too long to keep, its traceback rendered at once.
    _example: bytes | str | None = attrs.field(default=None, init=False, repr=False)
    _first_time: datetime | None = attrs.field(default=None, init=False, repr=False)
    _last_time: datetime | None = attrs.field(default=None, init=False, repr=False)
    _example_rank: tuple[bool, datetime] | None = attrs.field(
        default=None, init=False, repr=False
    )

    @property
    def last_time(self) -> datetime | None:
        """The latest timestamp seen, for ordering groups."""
        return self._last_time

    def add(
        self,
        when: datetime | None,
        shown: str | None,
        *,
        task_id: str | None,
        request_id: str | None,
        supervisor: str | None,
        error: str | None,
        has_traceback: bool,
    ) -> bool:
        """Fold one failure into the aggregate.

        Returns True when this failure is now the group's example, whose
        traceback the caller then hands to :meth:`set_example`.
        """
        self.count += 1
        if when is not None:
            if self._first_time is None or when < self._first_time:
                self._first_time = when
                self.first_seen = shown
            # >= so that, at equal times, the later line in the input wins.
            if self._last_time is None or when >= self._last_time:
                self._last_time = when
                self.last_seen = shown
        if task_id is not None:
            self._count_task(task_id)
        if request_id is not None:
            self._add_request_id(request_id, when)
        if supervisor is not None and supervisor not in self.supervisors:
            if len(self.supervisors) < MAX_SUPERVISORS:
                self.supervisors[supervisor] = None
            else:
                self.supervisors_truncated = True
        rank = (has_traceback, when or MIN_TIME)
        if self._example_rank is None or rank >= self._example_rank:
            self._example_rank = rank
            self.example_task_id = task_id
            self.last_error = error
            self._example = None
            return True
        return False

    def _count_task(self, task_id: str) -> None:
        # A hash is a fixed 60-odd bytes whatever the id's length; a
        # collision among the ids of one scan is a one in 10**9 event.
        key = hash(task_id)
        if key in self._task_ids:
            self.repeats += 1
        elif self._budget.task_ids > 0:
            self._budget.task_ids -= 1
            self._task_ids.add(key)
            self.tasks += 1
        else:
            self.tasks_truncated = True

    def _add_request_id(self, request_id: str, when: datetime | None) -> None:
        ids = self.request_ids
        if request_id in ids:
            seen = ids[request_id]
            if when is not None and (seen is None or when < seen):
                ids[request_id] = when
        elif len(ids) < MAX_REQUEST_IDS and self._budget.request_ids > 0:
            self._budget.request_ids -= 1
            ids[request_id] = when
        else:
            self.request_ids_truncated = True

    def set_example(self, line: bytes, exception: object) -> None:
        """Keep the example failure's traceback, from its log *line*."""
        if exception is None:
            self._example = None
        elif len(line) <= _KEEP_LINE:
            self._example = line  # a reference, not a copy: free to keep
        else:
            self._example = render_traceback(exception) or ""

    def ordered_request_ids(self) -> list[str]:
        """Request ids by the time first seen (ids without a time last)."""
        ids = self.request_ids
        # sorted() is stable: ties, and ids without a time, keep input order.
        return sorted(ids, key=lambda rid: (ids[rid] is None, ids[rid] or MIN_TIME))

    @property
    def last_traceback(self) -> str | None:
        """The example failure's traceback as Python would print it."""
        example = self._example
        if isinstance(example, bytes):
            try:
                record = json.loads(example)
            except (ValueError, RecursionError):  # checked when read; be safe
                return None
            example = render_traceback(record.get("exception"))
        return clip(example, MAX_TRACEBACK) if example else None

    def as_json(self) -> dict[str, Any]:
        """The machine-readable form written by ``--json``."""
        return {
            "task_name": self.task_name,
            "error_type": self.error_type,
            "supervisors": list(self.supervisors),
            "supervisors_truncated": self.supervisors_truncated,
            "count": self.count,
            "tasks": self.tasks,
            "tasks_truncated": self.tasks_truncated,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "example_task_id": self.example_task_id,
            "request_ids": self.ordered_request_ids(),
            "request_ids_truncated": self.request_ids_truncated,
            "last_error": self.last_error,
            "last_traceback": self.last_traceback,
        }
