"""``python -m supervisor failures``: group task failures found in JSON-lines logs.

When a background task fails, the supervisor writes one ``task:failed`` line
at error level, with the task's id and name, the error type and message, the
request's context variables (``request_id``, ...) and the traceback under
``exception`` (a string from structlog's ``format_exc_info``, or the
structured list from ``dict_tracebacks``; see :mod:`supervisor.logs`).  In a
busy service those lines drown among everything else.  This command streams
the logs (files, ``.gz`` files, or stdin) and answers the first questions of
an incident: *what* fails, *how often*, *since when*, *for which requests*,
and *where* (the last traceback, rendered back to Python's usual text)::

    python -m supervisor failures /var/log/app.log.1.gz /var/log/app.log
    kubectl logs deploy/app | python -m supervisor failures --since 2h
    python -m supervisor failures --json --task send_email app.log

It reads line by line and keeps only one small aggregate per (task name,
error type) group, so memory stays flat whatever the size of the logs.
Lines that are not JSON objects are counted and skipped, never fatal;
JSON lines about anything other than a failure are ignored without being
decoded.

Exit status: 0 when no failures were found, 1 when failures were found,
2 on a usage error or a file that cannot be read.

This module is deliberately stdlib-only and imports nothing else from the
package, so the command works on a machine that only has the logs.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import re
import sys
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any, cast

__all__ = [
    "EXIT_ERROR",
    "EXIT_FAILURES",
    "EXIT_OK",
    "Group",
    "ReadError",
    "ScanResult",
    "Scanner",
    "main",
    "parse_since",
    "render_traceback",
    "scan_files",
]

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_ERROR = 2

_PROG = "python -m supervisor"
_FAILURES_DESCRIPTION = """\
Read JSON-lines logs written by structlog's JSONRenderer (see
supervisor.logs.configure_logging) and print the task:failed events grouped
by task name and error type: count, first and last seen, an example task id,
the request ids involved and the last traceback.  Plain and gzip-compressed
files are streamed; lines that are not JSON objects are counted and skipped.
"""
_EPILOG = """\
exit status:
  0  no failures were found
  1  failures were found
  2  usage error, or a file could not be read
"""

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
# How many request ids the human output lists before summarising the rest.
_SHOWN_REQUEST_IDS = 10

_GZIP_MAGIC = b"\x1f\x8b"
# The bytes a JSON text can start with (RFC 8259, plus a UTF-8 BOM's first).
_JSON_STARTS = frozenset(b'{["-0123456789tfn\xef')
_MIN_TIME = datetime.min.replace(tzinfo=UTC)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_DURATIONS = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

_CAUSE = "The above exception was the direct cause of the following exception:"
_CONTEXT = "During handling of the above exception, another exception occurred:"


class ReadError(Exception):
    """A log source could not be opened or read; the message names it."""


@dataclass(slots=True, eq=False)
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
    request_ids: set[str] = field(default_factory=set)
    request_ids_truncated: bool = False
    _first_time: datetime | None = field(default=None, init=False, repr=False)
    _last_time: datetime | None = field(default=None, init=False, repr=False)
    _example_rank: tuple[bool, datetime] | None = field(
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


@dataclass(slots=True, eq=False)
class ScanResult:
    """Everything one run of the command learned from its input."""

    groups: dict[tuple[str, str], Group] = field(default_factory=dict)
    lines: int = 0
    blank: int = 0
    failures: int = 0
    filtered_out: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

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
        task_name = _text(record.get("task_name")) or _text(record.get("name")) or "?"
        error_type = (
            _text(record.get("error_type")) or _error_type_from(exception) or "?"
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
            task_id=_text(record.get("task_id")),
            request_id=_text(record.get("request_id")),
            error=_text(record.get("error")),
            exception=exception,
        )


def _is_failure(record: dict[str, Any]) -> bool:
    if record.get("event") != _FAILED_EVENT:
        return False  # another event that merely mentions failures
    level = record.get("level")
    return level is None or str(level).lower() in _FAILURE_LEVELS


def _text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


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


def _error_type_from(exception: object) -> str | None:
    """Recover the error type from a traceback when the line lacks it."""
    if isinstance(exception, list) and exception and isinstance(exception[0], dict):
        return _text(exception[0].get("exc_type"))
    if isinstance(exception, str):
        lines = exception.rstrip().splitlines()
        if lines:
            name = lines[-1].partition(":")[0].strip()
            if name and " " not in name:
                return name
    return None


def render_traceback(exception: object) -> str | None:
    """Turn a logged ``exception`` value back into Python's traceback text.

    Accepts the string written by structlog's ``format_exc_info`` (returned
    as is) and the list of dicts written by ``dict_tracebacks`` (one dict per
    exception in the chain, outermost first, as structlog's
    ``ExceptionDictTransformer`` produces them), which is rendered innermost
    first with Python's "direct cause" / "during handling" separators, notes,
    and exception groups.  Returns None when there is no traceback.  Never
    raises: the value comes from a log file and may be anything.
    """
    if isinstance(exception, str):
        return exception.rstrip("\n") or None
    if isinstance(exception, dict):
        exception = [exception]
    if not isinstance(exception, list) or not exception:
        return None
    try:
        lines = _render_chain(exception)
    except RecursionError:
        return json.dumps(exception, default=str)
    return "\n".join(lines) if lines else None


def _render_chain(stacks: list[Any]) -> list[str]:
    stacks = [stack for stack in stacks if isinstance(stack, dict)]
    lines: list[str] = []
    for index in range(len(stacks) - 1, -1, -1):
        stack = stacks[index]
        lines.extend(_render_stack(stack))
        if index:
            # ``is_cause`` on this stack says how it relates to the one
            # before it in the list, which Python prints after it.
            lines += ["", _CAUSE if stack.get("is_cause") else _CONTEXT, ""]
    return lines


def _render_stack(stack: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    is_group = bool(stack.get("is_group"))
    frames = stack.get("frames")
    if isinstance(frames, list) and frames:
        lines.append(
            "Exception Group Traceback (most recent call last):"
            if is_group
            else "Traceback (most recent call last):"
        )
        for frame in frames:
            if not isinstance(frame, dict):
                continue
            filename, lineno = frame.get("filename"), frame.get("lineno")
            name = frame.get("name")
            if lineno == -1 and not filename:
                lines.append(f"  [{name}]")  # max_frames elision marker
            else:
                lines.append(f'  File "{filename}", line {lineno}, in {name}')
    syntax = stack.get("syntax_error")
    if isinstance(syntax, dict):
        lines.append(f'  File "{syntax.get("filename")}", line {syntax.get("lineno")}')
        lines.append(f"    {str(syntax.get('line', '')).strip()}")
        offset = syntax.get("offset")
        if isinstance(offset, int) and offset > 0:
            lines.append("    " + " " * (offset - 1) + "^")
    exc_type = _text(stack.get("exc_type")) or "?"
    exc_value = _text(stack.get("exc_value"))
    lines.append(f"{exc_type}: {exc_value}" if exc_value else exc_type)
    notes = stack.get("exc_notes")
    if isinstance(notes, list):
        lines.extend(str(note) for note in notes)
    subs = stack.get("exceptions")
    if is_group and isinstance(subs, list) and subs:
        for number, sub in enumerate(subs, 1):
            lines.append(f"+---------------- {number} ----------------")
            sub_lines = _render_chain(sub if isinstance(sub, list) else [sub])
            lines.extend(f"| {line}" if line else "|" for line in sub_lines)
        lines.append("+------------------------------------")
    return lines


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
                raise ReadError(_cannot_read(name, exc)) from exc
        if not hasattr(stream, "peek"):
            # Only buffered readers can look ahead at the magic bytes
            # without consuming them; wrap anything else (tests' BytesIO).
            stream = io.BufferedReader(cast(Any, stream))
        head = cast(io.BufferedReader, stream).peek(2)[:2]
        lines = stream
        if head == _GZIP_MAGIC:
            lines = stack.enter_context(gzip.GzipFile(fileobj=stream, mode="rb"))
        yield lines


def _cannot_read(name: str, exc: BaseException) -> str:
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
            raise ReadError(_cannot_read(name, exc)) from exc
    return scanner.result


def _since_argument(text: str) -> datetime:
    try:
        return parse_since(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m supervisor`` command line."""
    parser = argparse.ArgumentParser(
        prog=_prog(),
        description="Tools for nursery-supervisor's structured logs.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    failures = commands.add_parser(
        "failures",
        help="group task failures found in JSON-lines logs",
        description=_FAILURES_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    failures.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help="log files, plain or .gz; '-' or none at all reads standard input",
    )
    failures.add_argument(
        "--json",
        action="store_true",
        help="write one JSON object per group, one per line; the summary goes "
        "to stderr",
    )
    failures.add_argument(
        "--since",
        type=_since_argument,
        metavar="WHEN",
        help="only failures at or after WHEN: an ISO 8601 time (UTC when no "
        "offset is given) or a duration back from now such as 30s, 15m, 2h, 1d",
    )
    failures.add_argument(
        "--task",
        action="append",
        metavar="NAME",
        help="only failures of the task named NAME (repeat for several)",
    )
    return parser


def _prog() -> str:
    # Run as ``python -m supervisor`` argv[0] is the path of __main__.py;
    # run as the ``nursery-supervisor`` console script it is that name.
    # Anything else (an in-process call from a test or a script) gets the
    # documented spelling.
    name = os.path.basename(sys.argv[0]) if sys.argv else ""
    return name if name == "nursery-supervisor" else _PROG


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def summary(result: ScanResult) -> str:
    """The closing line: failures, groups, filtered and skipped lines."""
    if result.failures:
        text = (
            f"{_plural(result.failures, 'failure')} in "
            f"{_plural(len(result.groups), 'group')}"
        )
    else:
        text = f"no failures found in {_plural(result.lines, 'line')}"
    if result.filtered_out:
        text += f" ({result.filtered_out:,} more filtered out by --since/--task)"
    skipped = sum(result.skipped.values())
    if skipped:
        if len(result.skipped) == 1:
            reasons = next(iter(result.skipped))
        else:
            reasons = ", ".join(
                f"{n:,} {why}" for why, n in result.skipped.most_common()
            )
        text += f"; {_plural(skipped, 'line')} skipped ({reasons})"
    if result.lines and result.lines == result.blank + skipped:
        text += (
            "; no JSON log lines at all: is this the log written with "
            "supervisor.logs.configure_logging() (structlog's JSONRenderer)?"
        )
    return text


def format_group(group: Group) -> str:
    """One group for a person reading a terminal."""
    ids = sorted(group.request_ids)
    shown = ", ".join(ids[:_SHOWN_REQUEST_IDS]) or "-"
    more = len(ids) - _SHOWN_REQUEST_IDS
    if more > 0 or group.request_ids_truncated:
        plus = "+" if group.request_ids_truncated else ""
        shown += f", ... ({max(more, 0)}{plus} more)"
    first, last = group.first_seen or "?", group.last_seen or "?"
    lines = [
        f"{group.task_name}  {group.error_type}  x{group.count}",
        f"  first seen  {first}   last seen  {last}",
        f"  example task  {group.example_task_id or '?'}      requests  {shown}",
    ]
    traceback = group.last_traceback
    if traceback is not None:
        lines.append("  last traceback:")
        lines.extend(f"    {line}" if line else "" for line in traceback.splitlines())
    elif group.last_error is not None:
        lines.append(f"  last error: {group.last_error}")
    return "\n".join(lines)


def _stdin_is_a_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError, OSError):  # replaced, closed, or odd
        return False


def _run_failures(args: argparse.Namespace) -> int:
    names: list[str] = args.files or ["-"]
    if not args.files and _stdin_is_a_terminal():
        # Waiting silently for a log to be typed in helps nobody.
        print(
            f"{_prog()} failures: error: no FILE given and standard input is a "
            f"terminal; pass log files, or pipe a log in: "
            f"`cat app.log | {_prog()} failures`",
            file=sys.stderr,
        )
        return EXIT_ERROR
    try:
        # Fail before the long scan, not after it, on a mistyped file name.
        for name in names:
            if name != "-":
                try:
                    with open(name, "rb"):
                        pass
                except OSError as exc:
                    raise ReadError(_cannot_read(name, exc)) from exc
        result = scan_files(names, since=args.since, tasks=args.task)
    except ReadError as exc:
        print(f"{_prog()} failures: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    status = EXIT_FAILURES if result.failures else EXIT_OK
    out = sys.stdout
    try:
        if args.json:
            for group in result.sorted_groups():
                out.write(json.dumps(group.as_json()) + "\n")
            out.flush()
            print(summary(result), file=sys.stderr)
        else:
            for group in result.sorted_groups():
                out.write(format_group(group) + "\n\n")
            out.write(summary(result) + "\n")
            out.flush()
    except BrokenPipeError:
        # The reader (``| head``) went away; that is not our error.  Point
        # stdout at devnull so the interpreter's final flush stays quiet.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, out.fileno())
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with *argv* (default ``sys.argv[1:]``).

    Returns the exit status instead of exiting, including for usage errors
    and ``--help``, so it can be called in-process: 0 no failures found,
    1 failures found, 2 usage error or unreadable file.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse's way to report usage and --help
        if exc.code is None:
            return EXIT_OK
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        # Tracebacks may quote anything; never die on an unencodable character.
        reconfigure(errors="backslashreplace")
    try:
        return _run_failures(args)
    except KeyboardInterrupt:
        print(f"{_prog()}: interrupted", file=sys.stderr)
        return 130
