"""Read JSON-lines logs and aggregate the ``task:failed`` lines in them.

When a background task fails, the supervisor writes one ``task:failed`` line
at error level, with the task's id and name, the error type and message, the
request's context variables (``request_id``, ...) and the traceback under
``exception`` (see :mod:`supervisor.logs`).  This module streams such logs
(opened by :mod:`supervisor._failures_io`) and folds every failure into one
small aggregate per (task name, error type) group, for ``python -m
supervisor failures`` (:mod:`supervisor._failures_cli`) to print.

Logs are attacker-influenced text (exception messages carry user input), so
nothing in them may cost unbounded memory, raise, or hang the scan.  Lines
that are not JSON objects are counted and skipped, never fatal; JSON lines
about anything other than a failure are ignored without being decoded.
What is kept is bounded whatever the input, by the limits below, and every
limit that was hit is reported:

- a line longer than :data:`MAX_LINE` is skipped (counted, with the reason)
  and streamed past in pieces, never held whole: a gzip bomb or a log
  without newlines costs one piece of memory;
- a failure line nested deeper than :data:`MAX_DEPTH` is skipped, decided
  before anything recurses into it;
- at most :data:`MAX_GROUPS` groups; failures of further groups are counted
  but not grouped;
- what each group keeps (names, ids, the example traceback) is capped in
  :mod:`supervisor._failures_groups`.

It imports nothing from the package but :mod:`supervisor._tracebacks`,
:mod:`supervisor._failures_groups` and :mod:`supervisor._failures_io`, and
nothing outside the standard library
but attrs, so reading logs needs no more than ``python -m supervisor``
loads anyway.
"""

from __future__ import annotations

import json
import json.scanner
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import IO, Any, cast

import attrs

from ._failures_groups import (
    MAX_ERROR,
    MAX_TEXT,
    MIN_TIME,
    Budget,
    Group,
    clip,
    clipped,
)
from ._failures_io import ReadError, cannot_read, open_source
from ._tracebacks import error_type_from

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
NOT_UTF8 = "not UTF-8"
NOT_AN_OBJECT = "not an object"
TOO_DEEP = "nested too deeply"
NO_TIMESTAMP = "failure without a usable timestamp for --since"

# The longest line read, newline included.  A real failure line with a
# structured traceback is a few KiB; one of a MiB is junk or an attack.
MAX_LINE = 1 << 20
# The deepest nesting of a failure line.  structlog's dict_tracebacks nests
# three levels per exception group level; 200 leaves room for 60 of them,
# and stays far below what json and the traceback renderer can recurse.
MAX_DEPTH = 200
# Distinct (task name, error type) groups kept.  A service has tens.
MAX_GROUPS = 1000

# The bytes a JSON text can start with (RFC 8259, plus a UTF-8 BOM's first).
_JSON_STARTS = frozenset(b'{["-0123456789tfn\xef')
# json's C scanner, called directly: json.loads(bytes) spends a quarter of
# its time sniffing the encoding and in two layers of Python around it.
_scan_once = json.scanner.make_scanner(cast(Any, json.JSONDecoder()))
_BOM = b"\xef\xbb\xbf"
_BAD = object()  # a line without a JSON value (None is JSON's null)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_DURATIONS = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def too_long() -> str:
    """The skip reason for a line over :data:`MAX_LINE`."""
    size = MAX_LINE
    shown = f"{size >> 20} MiB" if size % (1 << 20) == 0 else f"{size:,} bytes"
    return f"longer than {shown}"


@attrs.define(eq=False)
class ScanResult:
    """Everything one run of the command learned from its input.

    ``failures`` counts every failure kept by the filters, ``ungrouped``
    those of them past :data:`MAX_GROUPS`, and ``filtered_out`` the
    failures that ``--since`` / ``--task`` (named in ``filters``) left out.
    """

    groups: dict[tuple[str, str], Group] = attrs.field(factory=dict)
    lines: int = 0
    blank: int = 0
    failures: int = 0
    ungrouped: int = 0
    filtered_out: int = 0
    filters: tuple[str, ...] = ()
    skipped: Counter[str] = attrs.field(factory=Counter)

    def sorted_groups(self) -> list[Group]:
        """Groups by count, most first, then by most recent failure."""
        groups = sorted(self.groups.values(), key=lambda g: (g.task_name, g.error_type))
        groups.sort(key=lambda g: g.last_time or MIN_TIME, reverse=True)
        groups.sort(key=lambda g: g.count, reverse=True)
        return groups

    @property
    def repeats(self) -> int:
        """Failure lines whose task id was already counted in their group."""
        return sum(group.repeats for group in self.groups.values())


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
        filters = ("--since",) * (since is not None) + ("--task",) * (tasks is not None)
        self.result = ScanResult(filters=filters)
        self._budget = Budget()

    def feed_stream(self, stream: IO[bytes]) -> None:
        """Consume a binary stream, never holding more than a line's cap of it."""
        # readline with a limit, through a C-level iterator: as fast as
        # iterating the stream, and no line is ever read whole past the cap.
        self._consume(iter(partial(stream.readline, MAX_LINE + 1), b""), stream)

    def feed(self, lines: Iterable[bytes]) -> None:
        """Consume *lines*, one log line each (trailing newline or not)."""
        self._consume(lines, None)

    def _consume(self, lines: Iterable[bytes], stream: IO[bytes] | None) -> None:
        needle = _NEEDLE
        failure = self._failure
        other = self._other
        limit = MAX_LINE
        count = 0
        for line in lines:
            count += 1
            if needle in line:
                if len(line) > limit:
                    self._too_long(line, stream)
                else:
                    failure(line)
            elif line[:1] == b"{" and line[-2:] == b"}\n":
                # An object-shaped line about something else: the common
                # case, ignored without decoding.  (Never a cut piece of a
                # long line: that would not end in a newline.)
                continue
            elif len(line) > limit:
                self._too_long(line, stream)
            else:
                other(line)
        self.result.lines += count

    def _too_long(self, line: bytes, stream: IO[bytes] | None) -> None:
        self.result.skipped[too_long()] += 1
        if stream is not None and line[-1:] != b"\n":
            # Stream past the rest of the line, a piece at a time.
            while (piece := stream.readline(MAX_LINE)) and piece[-1:] != b"\n":
                pass

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
        value = self._decode(stripped)
        if value is not _BAD and not isinstance(value, dict):
            self.result.skipped[NOT_AN_OBJECT] += 1

    def _decode(self, line: bytes) -> object:
        """The line's JSON value; ``_BAD``, counted as skipped, when it has none."""
        try:
            return _loads(line)
        except UnicodeDecodeError:
            reason = NOT_UTF8
        except ValueError:
            reason = NOT_JSON
        except RecursionError:
            reason = TOO_DEEP
        self.result.skipped[reason] += 1
        return _BAD

    def _failure(self, line: bytes) -> None:
        record = self._decode(line)
        if record is _BAD:
            return
        if not isinstance(record, dict):
            self.result.skipped[NOT_AN_OBJECT] += 1
            return
        # Brackets counted in C bound the depth from above; only a line
        # with many of them is walked to measure it.
        if line.count(b"[") + line.count(b"{") > MAX_DEPTH and _deeper_than(
            record, MAX_DEPTH
        ):
            self.result.skipped[TOO_DEEP] += 1
        elif _is_failure(record):
            self._add(record, line)

    def _add(self, record: dict[str, Any], line: bytes) -> None:
        result = self.result
        exception = record.get("exception")
        task_name = (
            clipped(record.get("task_name")) or clipped(record.get("name")) or "?"
        )
        error_type = (
            clipped(record.get("error_type"))
            or clipped(error_type_from(exception))
            or "?"
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
            if len(result.groups) >= MAX_GROUPS:
                result.ungrouped += 1
                return
            group = result.groups[key] = Group(
                task_name, error_type, budget=self._budget
            )
        if group.add(
            when,
            shown,
            task_id=clipped(record.get("task_id")),
            request_id=clipped(record.get("request_id")),
            supervisor=clipped(record.get("supervisor")),
            error=clipped(record.get("error"), MAX_ERROR),
            has_traceback=exception is not None,
        ):
            group.set_example(line, exception)


def _loads(line: bytes) -> object:
    """``json.loads`` for one UTF-8 log line, faster.

    Raises:
        UnicodeDecodeError: not UTF-8.
        ValueError: not one JSON value.
        RecursionError: nested too deeply for the decoder.
    """
    if line[:3] == _BOM:
        line = line[3:]
    text = line.decode("utf-8", "surrogatepass").strip(" \t\n\r")
    try:
        value, end = _scan_once(text, 0)
    except StopIteration:
        raise ValueError("no JSON value") from None
    if end != len(text):
        raise ValueError("extra data after the JSON value")
    return value


def _deeper_than(value: object, limit: int) -> bool:
    """Whether *value* nests containers more than *limit* deep (no recursion)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children: Iterable[object]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        for child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False


def _is_failure(record: dict[str, Any]) -> bool:
    if record.get("event") != _FAILED_EVENT:
        return False  # another event that merely mentions failures
    level = record.get("level")
    return level is None or (
        isinstance(level, str) and level.lower() in _FAILURE_LEVELS
    )


def _timestamp(value: object) -> tuple[datetime | None, str | None]:
    """Parse a log timestamp; naive times are taken as UTC."""
    if isinstance(value, str):
        value = clip(value, MAX_TEXT)
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
            return None, clip(str(value), MAX_TEXT)
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
            with open_source(name) as stream:
                scanner.feed_stream(stream)
        except ReadError:
            raise
        except (OSError, EOFError, zlib.error) as exc:
            raise ReadError(cannot_read(name, exc)) from exc
    return scanner.result
