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

It reads line by line and keeps only one small, capped aggregate per (task
name, error type) group, so memory stays bounded whatever the size or shape
of the logs.  Lines that are not JSON objects are counted and skipped,
never fatal; JSON lines about anything other than a failure are ignored
without being decoded.

Logs are attacker-influenced text, so everything this module prints from
them goes through :func:`visible`: control characters and escape sequences
are shown as escapes, never emitted, and ``--json`` output is pure ASCII.

Exit status: 0 when no failures were found, 1 when failures were found,
2 on a usage error or a file that cannot be read.

This module is the command line only: the scanning lives in
:mod:`supervisor._failures`, the per-group aggregates in
:mod:`supervisor._failures_groups`, opening sources in
:mod:`supervisor._failures_io` and the traceback rendering in
:mod:`supervisor._tracebacks`.  They import nothing from the package but
each other (and nothing outside the standard library but attrs), so the
command never loads the supervisor's runtime (anyio, structlog); ``--version``
reads the distribution's metadata for the same reason.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from . import _failures
from ._failures import (
    Group,
    ReadError,
    ScanResult,
    parse_since,
    scan_files,
)
from ._failures_io import check_source

__all__ = [
    "EXIT_ERROR",
    "EXIT_FAILURES",
    "EXIT_OK",
    "build_parser",
    "format_group",
    "main",
    "summary",
    "version_line",
    "visible",
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

# How many request ids the human output lists before summarising the rest.
_SHOWN_REQUEST_IDS = 10

# What must never reach a terminal raw.  Log text is attacker-influenced
# (exception messages carry user input): C0 controls (ESC starts every
# CSI/OSC sequence: retitling, screen clears, OSC 52 clipboard writes,
# cursor moves that overprint a line; CR overprints too, BEL rings), DEL,
# C1 controls (0x9b is a one-character CSI on some terminals), the Unicode
# line and paragraph separators, bidirectional overrides and isolates
# ("Trojan Source" reordering), the BOM and lone surrogates.  Each is shown
# as its Python escape (ESC as the four characters \x1b), never emitted.
_BIDI = r"\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_OTHER = r"\x7f-\x9f\u2028\u2029\ufeff\ud800-\udfff"
_UNSAFE = re.compile(rf"[\x00-\x1f{_OTHER}{_BIDI}]")
# Tracebacks are many lines: keep their newlines and tabs, nothing else.
_UNSAFE_IN_BLOCK = re.compile(rf"[\x00-\x08\x0b-\x1f{_OTHER}{_BIDI}]")


_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str, *, block: bool = False) -> str:
    """*text* safe for a terminal: every control character shown as an escape.

    With *block*, newlines and tabs are kept (a traceback); otherwise they
    are escaped too, so that one field can never forge a line of its own.
    """
    return (_UNSAFE_IN_BLOCK if block else _UNSAFE).sub(_escape, text)


_DISTRIBUTION = "nursery-supervisor"


def version_line() -> str:
    """``nursery-supervisor <version>``, from the installed distribution's metadata.

    Read from the metadata rather than from the package, so that asking for
    the version imports nothing of the supervisor's runtime.
    """
    from importlib import metadata  # noqa: PLC0415  (only for --version)

    try:
        version = metadata.version(_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        version = "(unknown: not installed; `pip install -e .` in the checkout)"
    return f"{_DISTRIBUTION} {version}"


class _VersionAction(argparse.Action):
    """``--version``: print :func:`version_line` on stdout and exit 0."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("help", "print the version and exit")
        super().__init__(
            option_strings,
            dest=argparse.SUPPRESS,
            default=argparse.SUPPRESS,
            nargs=0,
            **kwargs,
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        print(version_line())
        parser.exit()


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
    parser.add_argument("--version", action=_VersionAction)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    failures = commands.add_parser(
        "failures",
        help="group task failures found in JSON-lines logs",
        description=_FAILURES_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    failures.add_argument("--version", action=_VersionAction)
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
    """The closing line: failures, groups, filtered, repeated and skipped lines."""
    if result.failures:
        text = (
            f"{_plural(result.failures, 'failure')} in "
            f"{_plural(len(result.groups), 'group')}"
        )
    else:
        text = f"no failures found in {_plural(result.lines, 'line')}"
    if result.filtered_out:
        by = "/".join(result.filters) or "the filters"
        more = _plural(result.filtered_out, "more failure")
        text += f" ({more} filtered out by {by})"
    if result.ungrouped:
        text += (
            f"; {result.ungrouped:,} of them in groups past the first "
            f"{_failures.MAX_GROUPS:,}, not shown (too many distinct task name "
            "and error type pairs)"
        )
    if result.repeats:
        verb = "repeats" if result.repeats == 1 else "repeat"
        text += (
            f"; {_plural(result.repeats, 'failure line')} {verb} a task id "
            "already counted (a log given twice, or overlapping files?)"
        )
    skipped = sum(result.skipped.values())
    if skipped:
        if len(result.skipped) == 1:
            reasons = next(iter(result.skipped))
        else:
            reasons = ", ".join(
                f"{n:,} {why}" for why, n in result.skipped.most_common()
            )
        text += f"; {_plural(skipped, 'line')} skipped ({reasons})"
    if skipped and result.lines == result.blank + skipped:
        text += (
            "; no JSON log lines at all: is this the log written with "
            "supervisor.logs.configure_logging() (structlog's JSONRenderer)?"
        )
    return text


def _tasks(group: Group) -> str:
    if not group.tasks and not group.tasks_truncated:
        return "no task ids"
    plus = "+" if group.tasks_truncated else ""
    return f"{group.tasks:,}{plus} task{'' if group.tasks == 1 and not plus else 's'}"


def _supervisors(group: Group) -> str:
    names = [visible(name) for name in group.supervisors]
    if not names:
        return ""
    if group.supervisors_truncated:
        names.append("...")
    return f"  supervisor{'s' if len(names) > 1 else ''} {', '.join(names)}"


def format_group(group: Group) -> str:
    """One group for a person reading a terminal.

    Every field comes from the log and goes through :func:`visible`, so no
    log line can drive the terminal or forge a line of the report.
    """
    ids = group.ordered_request_ids()
    shown = ", ".join(visible(rid) for rid in ids[:_SHOWN_REQUEST_IDS]) or "-"
    more = len(ids) - _SHOWN_REQUEST_IDS
    if more > 0 or group.request_ids_truncated:
        plus = "+" if group.request_ids_truncated else ""
        shown += f", ... ({max(more, 0)}{plus} more)"
    first = visible(group.first_seen or "?")
    last = visible(group.last_seen or "?")
    lines = [
        f"{visible(group.task_name)}  {visible(group.error_type)}  "
        f"x{group.count:,} ({_tasks(group)}){_supervisors(group)}",
        f"  first seen  {first}   last seen  {last}",
        f"  example task  {visible(group.example_task_id or '?')}      "
        f"requests  {shown}",
    ]
    traceback = group.last_traceback
    if traceback is not None:
        lines.append("  last traceback:")
        # Split on newlines only: str.splitlines() would also break on the
        # form feeds and separators that visible() shows as escapes.
        lines.extend(
            f"    {line}" if line else ""
            for line in visible(traceback, block=True).split("\n")
        )
    elif group.last_error is not None:
        lines.append(f"  last error: {visible(group.last_error)}")
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
            check_source(name)
        result = scan_files(names, since=args.since, tasks=args.task)
    except ReadError as exc:
        print(visible(f"{_prog()} failures: error: {exc}"), file=sys.stderr)
        return EXIT_ERROR
    status = EXIT_FAILURES if result.failures else EXIT_OK
    out = sys.stdout
    try:
        if args.json:
            for group in result.sorted_groups():
                # ensure_ascii: every control and non-ASCII character is a
                # \u escape, so the output is plain ASCII and valid JSON.
                out.write(json.dumps(group.as_json(), ensure_ascii=True) + "\n")
            out.flush()
            print(visible(summary(result)), file=sys.stderr)
        else:
            for group in result.sorted_groups():
                out.write(format_group(group) + "\n\n")
            out.write(visible(summary(result)) + "\n")
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
