"""Tests for ``python -m supervisor failures`` and the ``supervisor.logs`` recipe.

The logs under test are real: written by structlog configured with
``configure_logging``, with real chained and plain exceptions passed as
``exc_info``, the way the supervisor logs a failed task.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

import supervisor
from supervisor import _failures, _failures_cli, _failures_groups, logs
from supervisor._failures import parse_since
from supervisor._failures_cli import main
from supervisor._tracebacks import render_traceback

# The package may not be installed: make the subprocess import this checkout.
_ROOT = str(Path(next(iter(supervisor.__path__))).resolve().parent)


@pytest.fixture(autouse=True)
def _isolated_structlog() -> Iterator[None]:
    """Keep each test's structlog configuration and context to itself."""
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()


def _connect() -> None:
    raise KeyError("smtp.example.com")


def _send_email() -> None:
    try:
        _connect()
    except KeyError as exc:
        raise ConnectionError("SMTP server unreachable") from exc


def _report() -> None:
    raise ValueError("empty report")


def _caught(func: Any) -> BaseException:
    try:
        func()
    except Exception as exc:
        return exc
    raise AssertionError(f"{func!r} did not raise")


def _log_failure(
    log: Any, exc: BaseException | None, *, task_id: str, task_name: str
) -> None:
    """Log a failure exactly as SPEC 3 says the supervisor does."""
    kwargs: dict[str, Any] = {"exc_info": exc} if exc is not None else {}
    log.error(
        "task:failed",
        task_id=task_id,
        task_name=task_name,
        supervisor="app",
        state="failed",
        attempt=1,
        duration_s=0.01,
        error=str(exc) if exc is not None else "gave up",
        error_type=type(exc).__name__ if exc is not None else "RuntimeError",
        **kwargs,
    )


GARBAGE = [
    "Traceback (most recent call last):",  # a stray uvicorn line: not JSON
    '{"event": "task:failed", "task_id": "cut-off',  # truncated write
    "[1, 2, 3]",  # JSON, but not an object
    "",  # blank lines are neither counted nor skipped
]


@pytest.fixture
def exceptions() -> dict[str, BaseException]:
    return {"chained": _caught(_send_email), "plain": _caught(_report)}


@pytest.fixture
def log_file(tmp_path: Path, exceptions: dict[str, BaseException]) -> Path:
    """A real JSON log: 3 chained failures, 1 plain, 1 without traceback."""
    path = tmp_path / "app.log"
    with path.open("w", encoding="utf-8") as stream:
        logs.configure_logging(json=True, stream=stream)
        log = structlog.get_logger("supervisor")
        log.info("app started")
        for task_id, request_id in [("t-1", "r-2"), ("t-2", "r-1"), ("t-3", "r-1")]:
            structlog.contextvars.bind_contextvars(request_id=request_id)
            log.info("task:started", task_id=task_id, task_name="send_email")
            _log_failure(
                log, exceptions["chained"], task_id=task_id, task_name="send_email"
            )
            log.debug("task:succeeded", task_id="filtered-by-level")
            stream.write(GARBAGE[0] + "\n")
        structlog.contextvars.clear_contextvars()
        _log_failure(log, exceptions["plain"], task_id="t-4", task_name="report")
        log.warning("task:retrying", task_id="t-5", note="after task:failed backoff")
        _log_failure(log, None, task_id="t-6", task_name="sync_cache")
        stream.write("\n".join(GARBAGE[1:]) + "\n")
    return path


def _records(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and value.get("event") == "task:failed":
            records.append(value)
    return records


def _python_traceback(exc: BaseException) -> str:
    """Python's own traceback text without the source lines a log lacks."""
    text = "".join(traceback.format_exception(exc))
    return "\n".join(line for line in text.splitlines() if not line.startswith("    "))


def _run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_ROOT, env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "supervisor", "failures", *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def _json_groups(stdout: str) -> dict[tuple[str, str], dict[str, Any]]:
    groups = [json.loads(line) for line in stdout.splitlines()]
    return {(g["task_name"], g["error_type"]): g for g in groups}


def _restamp(path: Path, target: Path, task_name: str, when: datetime) -> None:
    """Copy the log, moving *task_name*'s failures to *when*."""
    stamp = when.isoformat().replace("+00:00", "Z")
    with path.open(encoding="utf-8") as src, target.open("w", encoding="utf-8") as dst:
        for line in src:
            try:
                record = json.loads(line)
            except ValueError:
                dst.write(line)
                continue
            if isinstance(record, dict) and record.get("task_name") == task_name:
                record["timestamp"] = stamp
                dst.write(json.dumps(record) + "\n")
            else:
                dst.write(line)


# -- the command, as a user runs it ------------------------------------------


def test_subprocess_groups_failures_for_a_person(
    log_file: Path, exceptions: dict[str, BaseException]
) -> None:
    """The human output groups, counts, dates, names requests and shows tracebacks."""
    records = _records(log_file)
    email = [r for r in records if r["task_name"] == "send_email"]

    proc = _run(str(log_file))

    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == ""
    out = proc.stdout
    blocks = out.split("\n\n")
    assert blocks[0].splitlines()[:3] == [
        "send_email  ConnectionError  x3 (3 tasks)  supervisor app",
        f"  first seen  {email[0]['timestamp']}   last seen  {email[-1]['timestamp']}",
        # Request ids in the order first seen: t-1 ran for r-2.
        "  example task  t-3      requests  r-2, r-1",
    ]
    assert "  last traceback:" in blocks[0]
    # Most frequent group first; then the most recent.
    headers = [line for line in out.splitlines() if line and not line[0].isspace()]
    assert headers[:3] == [
        "send_email  ConnectionError  x3 (3 tasks)  supervisor app",
        "sync_cache  RuntimeError  x1 (1 task)  supervisor app",
        "report  ValueError  x1 (1 task)  supervisor app",
    ]
    assert "  example task  t-6      requests  -\n  last error: gave up" in out
    assert _python_traceback(exceptions["chained"]) in "\n".join(
        line.removeprefix("    ") for line in out.splitlines()
    )
    assert out.rstrip("\n").splitlines()[-1] == (
        "5 failures in 3 groups; 5 lines skipped (4 not JSON, 1 not an object)"
    )


def test_subprocess_help_documents_exit_status() -> None:
    """``--help`` explains the exit status and exits 0."""
    proc = _run("--help")
    assert proc.returncode == 0
    assert "exit status:" in proc.stdout
    assert "1  failures were found" in proc.stdout


def test_subprocess_reads_stdin(log_file: Path) -> None:
    """With no FILE the command reads standard input."""
    proc = _run(stdin=log_file.read_bytes())
    assert proc.returncode == 1, proc.stderr
    assert "send_email  ConnectionError  x3 (3 tasks)" in proc.stdout


# -- in process, through main(argv) -----------------------------------------


def test_json_output_keys_and_values(
    log_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--json`` writes one object per group and the summary on stderr."""
    records = _records(log_file)
    email = [r for r in records if r["task_name"] == "send_email"]

    assert main(["failures", "--json", str(log_file)]) == 1

    captured = capsys.readouterr()
    assert captured.err.strip() == (
        "5 failures in 3 groups; 5 lines skipped (4 not JSON, 1 not an object)"
    )
    lines = captured.out.splitlines()
    assert len(lines) == 3
    groups = _json_groups(captured.out)
    assert list(groups) == [
        ("send_email", "ConnectionError"),
        ("sync_cache", "RuntimeError"),
        ("report", "ValueError"),
    ]
    required = {
        "task_name",
        "error_type",
        "count",
        "first_seen",
        "last_seen",
        "example_task_id",
        "request_ids",
        "last_traceback",
    }
    for group in groups.values():
        assert required <= group.keys()
    send = groups["send_email", "ConnectionError"]
    assert send["count"] == 3
    assert send["first_seen"] == email[0]["timestamp"]
    assert send["last_seen"] == email[-1]["timestamp"]
    assert send["example_task_id"] == "t-3"
    assert send["request_ids"] == ["r-2", "r-1"]  # by time first seen
    assert (send["tasks"], send["tasks_truncated"]) == (3, False)
    assert send["supervisors"] == ["app"]
    assert send["last_error"] == "SMTP server unreachable"
    report = groups["report", "ValueError"]
    assert report["request_ids"] == []
    assert report["last_traceback"].endswith("ValueError: empty report")
    sync = groups["sync_cache", "RuntimeError"]
    assert sync["last_traceback"] is None
    assert sync["last_error"] == "gave up"


def test_tracebacks_read_like_pythons(
    log_file: Path,
    exceptions: dict[str, BaseException],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Structured tracebacks come back as Python prints them, chains included."""
    main(["failures", "--json", str(log_file)])
    groups = _json_groups(capsys.readouterr().out)

    chained = groups["send_email", "ConnectionError"]["last_traceback"]
    assert chained == _python_traceback(exceptions["chained"])
    assert "KeyError: 'smtp.example.com'" in chained
    assert "The above exception was the direct cause" in chained
    plain = groups["report", "ValueError"]["last_traceback"]
    assert plain == _python_traceback(exceptions["plain"])


def test_string_tracebacks_from_format_exc_info(
    tmp_path: Path,
    exceptions: dict[str, BaseException],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Logs rendered with ``format_exc_info`` keep their traceback text."""
    path = tmp_path / "plain-tracebacks.log"
    with path.open("w", encoding="utf-8") as stream:
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
            logger_factory=structlog.WriteLoggerFactory(file=stream),
        )
        log = structlog.get_logger()
        _log_failure(log, exceptions["chained"], task_id="t-1", task_name="mail")

    assert main(["failures", "--json", str(path)]) == 1
    (group,) = _json_groups(capsys.readouterr().out).values()
    assert group["last_traceback"] == "".join(
        traceback.format_exception(exceptions["chained"])
    ).rstrip("\n")


def test_since_accepts_iso_times_and_durations(
    log_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--since`` drops older failures, by ISO time (naive is UTC) or duration."""
    old = tmp_path / "old.log"
    three_days_ago = datetime.now(UTC) - timedelta(days=3)
    _restamp(log_file, old, "report", three_days_ago)
    two_days_ago_naive = (datetime.now(UTC) - timedelta(days=2)).replace(tzinfo=None)

    for since in ["1d", "36h", two_days_ago_naive.isoformat()]:
        assert main(["failures", "--json", "--since", since, str(old)]) == 1
        captured = capsys.readouterr()
        assert ("report", "ValueError") not in _json_groups(captured.out), since
        assert len(_json_groups(captured.out)) == 2
        assert "4 failures in 2 groups (1 more failure filtered out by --since)" in (
            captured.err
        )

    assert main(["failures", "--json", "--since", "4d", str(old)]) == 1
    assert len(_json_groups(capsys.readouterr().out)) == 3
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert main(["failures", "--since", future, str(old)]) == 0
    assert "no failures found" in capsys.readouterr().out


def test_since_rejects_nonsense(
    log_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad ``--since`` is a usage error whose message shows both forms."""
    assert main(["failures", "--since", "yesterday", str(log_file)]) == 2
    err = capsys.readouterr().err
    assert "'yesterday' is neither an ISO 8601 time nor a duration" in err
    assert "30s, 15m, 2h, 1d" in err


def test_parse_since_units() -> None:
    """Durations combine units; offsets are kept; naive times are UTC."""
    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    assert parse_since("30s", now=now) == now - timedelta(seconds=30)
    assert parse_since("1h30m", now=now) == now - timedelta(minutes=90)
    assert parse_since("2d", now=now) == now - timedelta(days=2)
    assert parse_since("2026-11-27T10:00:00") == datetime(2026, 11, 27, 10, tzinfo=UTC)
    assert parse_since("2026-11-27T10:00:00+01:00") == datetime(
        2026, 11, 27, 9, tzinfo=UTC
    )
    with pytest.raises(ValueError, match="neither an ISO 8601 time"):
        parse_since("30")


def test_task_filter(log_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--task`` keeps one task name (or several, repeated)."""
    assert main(["failures", "--json", "--task", "report", str(log_file)]) == 1
    captured = capsys.readouterr()
    assert list(_json_groups(captured.out)) == [("report", "ValueError")]
    assert "1 failure in 1 group (4 more failures filtered out by --task)" in (
        captured.err
    )

    argv = ["failures", "--json", "--task", "report", "--task", "sync_cache"]
    assert main([*argv, str(log_file)]) == 1
    assert len(_json_groups(capsys.readouterr().out)) == 2

    assert main(["failures", "--task", "no_such_task", str(log_file)]) == 0
    assert "no failures found" in capsys.readouterr().out


def test_gzip_by_magic_whatever_the_name(
    log_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Gzip files are detected and streamed; several files add up."""
    gz = tmp_path / "app.log.1.gz"
    disguised = tmp_path / "rotated.log"
    for target in (gz, disguised):
        with gzip.open(target, "wb") as out:
            out.write(log_file.read_bytes())

    assert main(["failures", "--json", str(gz), str(disguised), str(log_file)]) == 1
    captured = capsys.readouterr()
    assert _json_groups(captured.out)["send_email", "ConnectionError"]["count"] == 9
    assert captured.err.startswith("15 failures in 3 groups;")


def test_stdin_in_process(
    log_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``-`` reads standard input, plain or gzip-compressed."""
    for data in (log_file.read_bytes(), gzip.compress(log_file.read_bytes())):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
        assert main(["failures", "--json", "-"]) == 1
        assert len(_json_groups(capsys.readouterr().out)) == 3


def test_bad_lines_are_counted_never_fatal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file of junk is read to the end, counted, and explained."""
    path = tmp_path / "junk.log"
    path.write_bytes(
        b"plain text\n\xff\xfe binary task:failed\n42\n\n"
        b'"task:failed"\n{"event": "task:failed"\n'
    )

    assert main(["failures", str(path)]) == 0

    out = capsys.readouterr().out.strip()
    assert out.startswith("no failures found in 6 lines; 5 lines skipped ")
    assert "(2 not JSON, 2 not an object, 1 not UTF-8)" in out
    assert "configure_logging" in out  # says what a readable log looks like


def test_exit_status_zero_without_failures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A healthy log exits 0; other events are ignored, not skipped."""
    path = tmp_path / "healthy.log"
    with path.open("w", encoding="utf-8") as stream:
        logs.configure_logging(stream=stream)
        log = structlog.get_logger()
        log.info("task:started", task_id="a")
        log.info("task:succeeded", task_id="a")
        # An event handler echoing the event at info is not a failure record.
        log.info("task:failed", task_id="a", name="echo")

    assert main(["failures", str(path)]) == 0
    assert capsys.readouterr().out == "no failures found in 3 lines\n"


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda tmp: tmp / "missing.log", "No such file or directory"),
        (lambda tmp: tmp, "it is a directory; pass the log files in it instead"),
        (
            lambda tmp: _write(tmp / "cut.gz", gzip.compress(b"{}\n" * 1000)[:40]),
            "truncated or corrupt",
        ),
    ],
    ids=["missing", "directory", "truncated-gzip"],
)
def test_unreadable_file_exits_2(
    log_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make: Any,
    reason: str,
) -> None:
    """An unreadable file is exit 2 with a message naming it and why."""
    bad = make(tmp_path)
    assert main(["failures", str(log_file), str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"cannot read {str(bad)!r}" in captured.err
    assert reason in captured.err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """No subcommand, or an unknown option, is a usage error."""
    assert main([]) == 2
    assert main(["failures", "--bogus"]) == 2
    assert "usage: python -m supervisor" in capsys.readouterr().err


def test_request_ids_are_capped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Distinct request ids are bounded per group so memory stays flat."""
    monkeypatch.setattr(_failures_groups, "MAX_REQUEST_IDS", 2)
    lines = [
        json.dumps(
            {
                "event": "task:failed",
                "level": "error",
                "task_name": "t",
                "error_type": "E",
                "request_id": f"r-{n}",
            }
        ).encode()
        + b"\n"
        for n in range(5)
    ]
    scanner = _failures.Scanner()
    scanner.feed(lines)
    group = scanner.result.groups["t", "E"]
    assert group.count == 5
    assert group.ordered_request_ids() == ["r-0", "r-1"]
    assert group.request_ids_truncated
    assert "r-0, r-1, ... (0+ more)" in _failures_cli.format_group(group)


def test_render_traceback_tolerates_anything() -> None:
    """Whatever a log holds under ``exception``, rendering never raises."""
    assert render_traceback(None) is None
    assert render_traceback(True) is None
    assert render_traceback([]) is None
    assert render_traceback("Traceback...\nE: x\n") == "Traceback...\nE: x"
    assert render_traceback([{"exc_type": "E"}, 3, "x"]) == "E"
    assert render_traceback({"exc_type": "E", "frames": [None, {}]}) == (
        'Traceback (most recent call last):\n  File "None", line None, in None\nE'
    )


def test_exception_groups_and_notes_render(tmp_path: Path) -> None:
    """Exception groups list their members; notes follow the message."""

    def fail() -> None:
        inner = ValueError("bad row")
        inner.add_note("row 7")
        raise ExceptionGroup("import failed", [inner, KeyError("id")])

    exc = _caught(fail)
    stream = io.StringIO()
    logs.configure_logging(stream=stream)
    _log_failure(structlog.get_logger(), exc, task_id="g", task_name="import")
    record = json.loads(stream.getvalue())

    text = render_traceback(record["exception"])

    assert text is not None
    assert text.startswith("Exception Group Traceback (most recent call last):")
    assert "ExceptionGroup: import failed (2 sub-exceptions)" in text
    first_member = (
        "+---------------- 1 ----------------\n| ValueError: bad row\n| row 7"
    )
    assert first_member in text
    assert "| KeyError: 'id'" in text


# -- the logging recipe -------------------------------------------------------


def test_configure_logging_json_lines() -> None:
    """JSON mode writes one object per line with the keys the CLI relies on."""
    stream = io.StringIO()
    logs.configure_logging(stream=stream)
    structlog.contextvars.bind_contextvars(request_id="r-9")
    log = structlog.get_logger("supervisor")
    log.debug("too quiet")
    log.info("hello", n=1)

    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "hello"
    assert record["level"] == "info"
    assert record["request_id"] == "r-9"
    assert record["n"] == 1
    stamp = datetime.fromisoformat(record["timestamp"])
    assert record["timestamp"].endswith("Z")
    assert abs(datetime.now(UTC) - stamp) < timedelta(minutes=1)


def test_structured_tracebacks_leave_locals_out(
    exceptions: dict[str, BaseException],
) -> None:
    """Frames are logged without local variables, which may hold secrets."""
    stream = io.StringIO()
    logs.configure_logging(stream=stream)
    log = structlog.get_logger()
    _log_failure(log, exceptions["plain"], task_id="x", task_name="y")
    (stack,) = json.loads(stream.getvalue())["exception"]
    assert stack["exc_type"] == "ValueError"
    assert stack["frames"]
    assert all("locals" not in frame for frame in stack["frames"])


def test_configure_logging_levels() -> None:
    """Levels are accepted by name in any case or as logging constants."""
    for level in ("debug", "DEBUG", logging.DEBUG):
        stream = io.StringIO()
        logs.configure_logging(level=level, stream=stream)
        structlog.get_logger().debug("shown")
        assert '"event": "shown"' in stream.getvalue()
    for bad in ("verbose", 15):
        with pytest.raises(ValueError, match=r"Unknown log level .* logging\.INFO"):
            logs.configure_logging(level=bad)


def test_configure_logging_console(exceptions: dict[str, BaseException]) -> None:
    """``json=False`` renders for people, uncoloured when not on a terminal."""
    stream = io.StringIO()
    logs.configure_logging(json=False, stream=stream)
    structlog.contextvars.bind_contextvars(request_id="r-7")
    _log_failure(
        structlog.get_logger(), exceptions["chained"], task_id="t-1", task_name="mail"
    )

    out = stream.getvalue()
    assert "task:failed" in out
    assert "request_id=r-7" in out
    assert "task_name=mail" in out
    assert "ConnectionError: SMTP server unreachable" in out
    assert "KeyError" in out
    assert "\x1b[" not in out
    assert not out.lstrip().startswith("{")


def test_json_processors_is_a_fresh_reusable_chain() -> None:
    """Apps wiring structlog themselves get their own copy, renderer last."""
    first, second = logs.json_processors(), logs.json_processors()
    assert [type(p) for p in first] == [type(p) for p in second]
    assert first is not second
    assert isinstance(first[-1], structlog.processors.JSONRenderer)
    assert structlog.contextvars.merge_contextvars in first


def test_terminal_stdin_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without FILE and with a terminal on stdin, say what to do, don't hang."""

    class Terminal(io.TextIOWrapper):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal(io.BytesIO(b"")))
    assert main(["failures"]) == 2
    assert "pass log files, or pipe a log in" in capsys.readouterr().err


# -- counting what a group holds (issue 11, item 7) ---------------------------


def _failure_line(**fields: Any) -> str:
    record = {
        "event": "task:failed",
        "level": "error",
        "task_name": "send_email",
        "error_type": "ConnectionError",
        "supervisor": "app",
    }
    record.update(fields)
    return json.dumps(record) + "\n"


def test_the_same_log_twice_counts_lines_and_distinct_tasks(
    log_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log given twice doubles ``count``, not ``tasks``; the summary says why."""
    assert main(["failures", str(log_file), str(log_file)]) == 1
    out = capsys.readouterr().out
    assert "send_email  ConnectionError  x6 (3 tasks)  supervisor app" in out
    assert (
        out.rstrip()
        .splitlines()[-1]
        .startswith(
            "10 failures in 3 groups; 5 failure lines repeat a task id already "
            "counted (a log given twice, or overlapping files?)"
        )
    )

    assert main(["failures", "--json", str(log_file), str(log_file)]) == 1
    send = _json_groups(capsys.readouterr().out)["send_email", "ConnectionError"]
    assert (send["count"], send["tasks"], send["tasks_truncated"]) == (6, 3, False)


def test_request_ids_sorted_by_time_first_seen(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Request ids come in the order first seen in time, whatever the file order."""
    newer, older = tmp_path / "app.log", tmp_path / "app.log.1"
    newer.write_text(
        _failure_line(
            task_id="t-3", request_id="zulu", timestamp="2026-11-27T10:03:00Z"
        )
        + _failure_line(
            task_id="t-4", request_id="alpha", timestamp="2026-11-27T10:04:00Z"
        )
        + _failure_line(task_id="t-5", request_id="mike"),  # no time: last
        encoding="utf-8",
    )
    older.write_text(
        _failure_line(
            task_id="t-1", request_id="alpha", timestamp="2026-11-27T10:01:00Z"
        )
        + _failure_line(
            task_id="t-2", request_id="kilo", timestamp="2026-11-27T10:02:00Z"
        ),
        encoding="utf-8",
    )
    assert main(["failures", "--json", str(newer), str(older)]) == 1
    [group] = _json_groups(capsys.readouterr().out).values()
    assert group["request_ids"] == ["alpha", "kilo", "zulu", "mike"]
    assert main(["failures", str(newer), str(older)]) == 1
    assert "requests  alpha, kilo, zulu, mike" in capsys.readouterr().out


def test_each_group_names_its_supervisors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A group says which supervisors its failures came from, in text and JSON."""
    path = tmp_path / "app.log"
    path.write_text(
        _failure_line(task_id="t-1", supervisor="web")
        + _failure_line(task_id="t-2", supervisor="worker")
        + _failure_line(task_id="t-3", supervisor="web")
        + _failure_line(task_id="t-4", task_name="sync", supervisor=None)
        + _failure_line(task_id=None, task_name="orphan"),
        encoding="utf-8",
    )
    assert main(["failures", str(path)]) == 1
    out = capsys.readouterr().out
    assert "send_email  ConnectionError  x3 (3 tasks)  supervisors web, worker\n" in out
    assert "sync  ConnectionError  x1 (1 task)\n" in out
    assert "orphan  ConnectionError  x1 (no task ids)  supervisor app\n" in out

    assert main(["failures", "--json", str(path)]) == 1
    groups = _json_groups(capsys.readouterr().out)
    assert groups["send_email", "ConnectionError"]["supervisors"] == ["web", "worker"]
    assert groups["sync", "ConnectionError"]["supervisors"] == []
    assert groups["orphan", "ConnectionError"]["tasks"] == 0


def test_filtered_out_counts_failures_and_names_the_filter(
    log_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The summary says what was filtered out (failures) and by which option."""
    assert (
        main(["failures", "--task", "sync_cache", "--since", "1h", str(log_file)]) == 1
    )
    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    assert last.startswith(
        "1 failure in 1 group (4 more failures filtered out by --since/--task)"
    )
    assert (
        main(["failures", "--task", "report", "--task", "sync_cache", str(log_file)])
        == 1
    )
    assert "(3 more failures filtered out by --task)" in capsys.readouterr().out


# -- --version and what the command imports -----------------------------------


@pytest.mark.parametrize("argv", [["--version"], ["failures", "--version"]])
def test_version(argv: list[str]) -> None:
    """``--version`` prints the distribution's version from its metadata."""
    from importlib import metadata

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_ROOT, env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "supervisor", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        proc.stdout == f"nursery-supervisor {metadata.version('nursery-supervisor')}\n"
    )


def test_version_when_not_installed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run from a checkout that is not installed, ``--version`` says so."""
    from importlib import metadata

    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith(
        "nursery-supervisor (unknown: not installed"
    )


# The command's own modules: whatever they import must be the standard
# library, attrs, or each other, so that reading logs never loads the runtime.
_COMMAND_MODULES = (
    "__main__",
    "_failures",
    "_failures_cli",
    "_failures_groups",
    "_failures_io",
    "_tracebacks",
)
_RUNTIME = ("anyio", "structlog", "trio", "sniffio", "supervisor._supervisor")


def test_command_modules_import_no_runtime() -> None:
    """The command's modules import only the stdlib, attrs and one another."""
    import ast

    allowed = {f"supervisor.{name}" for name in _COMMAND_MODULES}
    package = Path(_ROOT) / "supervisor"
    for name in _COMMAND_MODULES:
        tree = ast.parse((package / f"{name}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = "supervisor" if node.level else ""
                module = node.module or ""
                if node.level and not module:  # from . import x
                    targets = [f"supervisor.{alias.name}" for alias in node.names]
                else:
                    targets = [".".join(filter(None, [base, module]))]
            else:
                continue
            for target in targets:
                top = target.partition(".")[0]
                assert (
                    top in sys.stdlib_module_names
                    or top in ("attrs", "__future__")
                    or target in allowed
                ), f"supervisor/{name}.py imports {target}"


def _imported_by(*argv: str) -> set[str]:
    """The modules ``python -X importtime -m supervisor ARGV`` loads."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_ROOT, env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "supervisor", *argv],
        input="",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr
    return {
        line.rpartition("|")[2].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:")
    }


@pytest.mark.parametrize("argv", [["failures", "-"], ["--version"]])
def test_the_command_does_not_import_the_runtime(argv: list[str]) -> None:
    """``python -m supervisor failures`` loads no anyio, structlog or core module."""
    loaded = _imported_by(*argv)
    assert "supervisor._failures_cli" in loaded
    assert sorted(loaded & set(_RUNTIME)) == []
