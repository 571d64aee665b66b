"""Read JSON-lines logs and aggregate the ``task:failed`` lines in them.

When a background task fails, the supervisor writes one ``task:failed`` line
at error level, with the task's id and name, the error type and message, the
request's context variables (``request_id``, ...) and the traceback under
``exception`` (see :mod:`supervisor.logs`).  This module streams such logs
(files, ``.gz`` files, or stdin) and folds every failure into one small
aggregate per (task name, error type) group, for ``python -m supervisor
failures`` (:mod:`supervisor._failures_cli`) to print.

It reads line by line and keeps only the aggregates, so memory stays flat
whatever the size of the logs.  Lines that are not JSON objects are counted
and skipped, never fatal; JSON lines about anything other than a failure are
ignored without being decoded.

It imports nothing from the package but :mod:`supervisor._tracebacks`, and
nothing outside the standard library but attrs, so reading logs needs no
more than ``python -m supervisor`` loads anyway.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import re
import sys
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import IO, Any, cast

import attrs

from ._tracebacks import as_text, error_type_from, render_traceback

__all__ = [
    "Group",
    "ReadError",
    "ScanResult",
    "Scanner",
    "cannot_read",
    "parse_since",
    "scan_files",
]

# Bytes, not text: most lines are rejected by this substring test before
# anything is decoded, which is where the command's speed comes from.
_NEEDLE = b"task:failed"
_FAILED_EVENT = "task:failed"
# A task:failed line at another level is somebody else's echo of the event
# (an on_event handler that logs it, say), not the supervisor's record.
_FAILURE_LEVELS = frozenset({"error", "critical", "exception", "fatal"})

NOT_JSON = "not JSON"
NOT_AN_OBJECT = "not an object"
NO_TIMESTAMP = "failure without a usable timestamp for --since"

# Distinct request ids kept per group.  The ids are the one per-group datum
# that grows with the log, and past a few hundred they stop helping a person
# anyway; the cap keeps memory flat on logs of any size.
MAX_REQUEST_IDS = 1000

_GZIP_MAGIC = b"\x1f\x8b"
# The bytes a JSON text can start with (RFC 8259, plus a UTF-8 BOM's first).
_JSON_STARTS = frozenset(b'{["-0123456789tfn\xef')
_MIN_TIME = datetime.min.replace(tzinfo=UTC)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_DURATIONS = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class ReadError(Exception):
    """A log source could not be opened or read; the message names it."""


@attrs.define(eq=False)
class Group:
    """What is remembered about one (task name, error type) pair.

    Only aggregates live here, so a log of any length costs one of these per
    distinct pair.  ``example_task_id``, ``last_error`` and ``last_exception``
    all come from the same failure, the most recent one that has a
    traceback (or the most recent one, if none has), so the example task id
    and the traceback shown next to it describe the same run.
    """

    task_name: str
    error_type: str
    count: int = 0
    first_seen: str | None = None
    last_seen: str | None = None
    example_task_id: str | None = None
    last_error: str | None = None
    last_exception: object = None
    request_ids: set[str] = attrs.field(factory=set)
    request_ids_truncated: bool = False
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
        error: str | None,
        exception: object,
    ) -> None:
        """Fold one failure into the aggregate."""
        self.count += 1
        if when is not None:
            if self._first_time is None or when < self._first_time:
                self._first_time = when
                self.first_seen = shown
            # >= so that, at equal times, the later line in the input wins.
            if self._last_time is None or when >= self._last_time:
                self._last_time = when
                self.last_seen = shown
        rank = (exception is not None, when or _MIN_TIME)
        if self._example_rank is None or rank >= self._example_rank:
            self._example_rank = rank
            self.example_task_id = task_id
            self.last_error = error
            self.last_exception = exception
        if request_id is not None and request_id not in self.request_ids:
            if len(self.request_ids) < MAX_REQUEST_IDS:
                self.request_ids.add(request_id)
            else:
                self.request_ids_truncated = True

    @property
    def last_traceback(self) -> str | None:
        """The example failure's traceback as Python would print it."""
        return render_traceback(self.last_exception)

    def as_json(self) -> dict[str, Any]:
        """The machine-readable form written by ``--json``."""
        return {
            "task_name": self.task_name,
            "error_type": self.error_type,
            "count": self.count,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "example_task_id": self.example_task_id,
            "request_ids": sorted(self.request_ids),
            "request_ids_truncated": self.request_ids_truncated,
            "last_error": self.last_error,
            "last_traceback": self.last_traceback,
        }


@attrs.define(eq=False)
class ScanResult:
    """Everything one run of the command learned from its input."""

    groups: dict[tuple[str, str], Group] = attrs.field(factory=dict)
    lines: int = 0
    blank: int = 0
    failures: int = 0
    filtered_out: int = 0
    skipped: Counter[str] = attrs.field(factory=Counter)

    def sorted_groups(self) -> list[Group]:
        """Groups by count, most first, then by most recent failure."""
        groups = sorted(self.groups.values(), key=lambda g: (g.task_name, g.error_type))
        groups.sort(key=lambda g: g.last_time or _MIN_TIME, reverse=True)
        groups.sort(key=lambda g: g.count, reverse=True)
        return groups


class Scanner:
    """Feed it log lines (as bytes); it keeps per-group aggregates only.

    *since* drops failures older than that aware datetime; *tasks* keeps
    only failures of those task names.  Both count as "filtered out", not
    as skipped: the lines were fine, the user asked not to see them.
    """

    def __init__(
        self,
        *,
        since: datetime | None = None,
        tasks: Iterable[str] | None = None,
    ) -> None:
        self.since = since
        self.tasks = frozenset(tasks) if tasks is not None else None
        self.result = ScanResult()

    def feed(self, lines: Iterable[bytes]) -> None:
        """Consume *lines*, one log line each (trailing newline or not)."""
        needle = _NEEDLE
        failure = self._failure
        other = self._other
        count = 0
        for line in lines:
            count += 1
            if needle in line:
                failure(line)
            elif line[:1] == b"{" and line[-2:] == b"}\n":
                # An object-shaped line about something else: the common
                # case, ignored without decoding.
                continue
            else:
                other(line)
        self.result.lines += count

    def _other(self, line: bytes) -> None:
        stripped = line.strip()
        if not stripped:
            self.result.blank += 1
            return
        if stripped[:1] == b"{" and stripped[-1:] == b"}":
            return
        if stripped[0] not in _JSON_STARTS:
            # Plain text (a server's banner, a stray traceback): no need to
            # pay for the decoder's exception to know it is not JSON.
            self.result.skipped[NOT_JSON] += 1
            return
        # JSON that is not an object, or junk that starts like JSON: worth
        # decoding to say which.
        try:
            value = json.loads(stripped)
        except (ValueError, RecursionError):
            self.result.skipped[NOT_JSON] += 1
            return
        if not isinstance(value, dict):
            self.result.skipped[NOT_AN_OBJECT] += 1

    def _failure(self, line: bytes) -> None:
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            self.result.skipped[NOT_JSON] += 1
            return
        if not isinstance(record, dict):
            self.result.skipped[NOT_AN_OBJECT] += 1
        elif _is_failure(record):
            self._add(record)

    def _add(self, record: dict[str, Any]) -> None:
        result = self.result
        exception = record.get("exception")
        task_name = (
            as_text(record.get("task_name")) or as_text(record.get("name")) or "?"
        )
        error_type = (
            as_text(record.get("error_type")) or error_type_from(exception) or "?"
        )
        if self.tasks is not None and task_name not in self.tasks:
            result.filtered_out += 1
            return
        when, shown = _timestamp(record.get("timestamp"))
        if self.since is not None:
            if when is None:
                result.skipped[NO_TIMESTAMP] += 1
                return
            if when < self.since:
                result.filtered_out += 1
                return
        result.failures += 1
        key = (task_name, error_type)
        group = result.groups.get(key)
        if group is None:
            group = result.groups[key] = Group(task_name, error_type)
        group.add(
            when,
            shown,
            task_id=as_text(record.get("task_id")),
            request_id=as_text(record.get("request_id")),
            error=as_text(record.get("error")),
            exception=exception,
        )


def _is_failure(record: dict[str, Any]) -> bool:
    if record.get("event") != _FAILED_EVENT:
        return False  # another event that merely mentions failures
    level = record.get("level")
    return level is None or str(level).lower() in _FAILURE_LEVELS


def _timestamp(value: object) -> tuple[datetime | None, str | None]:
    """Parse a log timestamp; naive times are taken as UTC."""
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return None, value
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when, value
    # TimeStamper(fmt=None) writes seconds since the epoch.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            when = datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None, str(value)
        return when, when.isoformat().replace("+00:00", "Z")
    return None, None


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """Parse ``--since``: an ISO 8601 time, or a duration back from *now*.

    Durations are a number and a unit, ``s``, ``m``, ``h``, ``d`` or ``w``,
    and may be combined (``1h30m``).  A time without a UTC offset is taken
    as UTC, which is what the supervisor's logs use.

    Raises:
        ValueError: *text* is neither; the message shows both forms.
    """
    value = text.strip()
    compact = value.replace(" ", "")
    if _DURATIONS.fullmatch(compact):
        seconds = sum(
            float(number) * _UNITS[unit] for number, unit in _DURATION.findall(compact)
        )
        try:
            return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
        except OverflowError:
            msg = f"{text!r} reaches back before year 1; use a shorter duration"
            raise ValueError(msg) from None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        msg = (
            f"{text!r} is neither an ISO 8601 time nor a duration; use a time "
            "such as 2026-11-27T10:00:00Z (UTC when no offset is given) or a "
            "duration back from now such as 30s, 15m, 2h, 1d or 1h30m"
        )
        raise ValueError(msg) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@contextlib.contextmanager
def _open_source(name: str) -> Iterator[Iterable[bytes]]:
    """Open *name* (``-`` is stdin) for binary reading, un-gzipping if needed.

    Compression is detected from the gzip magic bytes rather than trusted
    from the file name, so rotated logs work whatever they are called.
    """
    stream: IO[bytes]
    lines: Iterable[bytes]
    with contextlib.ExitStack() as stack:
        if name == "-":
            stream = sys.stdin.buffer  # not closed: it is not ours
        else:
            try:
                stream = stack.enter_context(open(name, "rb"))
            except OSError as exc:
                raise ReadError(cannot_read(name, exc)) from exc
        if not hasattr(stream, "peek"):
            # Only buffered readers can look ahead at the magic bytes
            # without consuming them; wrap anything else (tests' BytesIO).
            stream = io.BufferedReader(cast(Any, stream))
        head = cast(io.BufferedReader, stream).peek(2)[:2]
        lines = stream
        if head == _GZIP_MAGIC:
            lines = stack.enter_context(gzip.GzipFile(fileobj=stream, mode="rb"))
        yield lines


def cannot_read(name: str, exc: BaseException) -> str:
    """The message for a source that failed with *exc*: which, why, what to do."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    shown = "standard input" if name == "-" else repr(name)
    hint = ""
    if isinstance(exc, (EOFError, zlib.error, gzip.BadGzipFile)):
        hint = (
            "; the compressed file looks truncated or corrupt: "
            f"recover what is readable with `zcat {name} > recovered.log` "
            "and pass that file instead"
        )
    return f"cannot read {shown}: {reason}{hint}"


def scan_files(
    names: Sequence[str],
    *,
    since: datetime | None = None,
    tasks: Iterable[str] | None = None,
) -> ScanResult:
    """Stream every source in *names* (``-`` is stdin) through one Scanner.

    Raises:
        ReadError: a source cannot be opened, read or decompressed; the
            message names it and says why.
    """
    scanner = Scanner(since=since, tasks=tasks)
    for name in names:
        try:
            with _open_source(name) as stream:
                scanner.feed(stream)
        except ReadError:
            raise
        except (OSError, EOFError, zlib.error) as exc:
            raise ReadError(cannot_read(name, exc)) from exc
    return scanner.result
