"""Fuzzing ``python -m supervisor failures``: any bytes, never fatal (issue 8, item 1).

Whatever the input, the command exits 0 or 1, counts every line exactly
once, finds every well-formed failure mixed into the soup, and writes
nothing a terminal would act on.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor import _failures
from supervisor._failures_cli import main

_FORBIDDEN = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f"
    "\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]"
)

_FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")),
    database=None,  # nothing written to the checkout
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Text that leans on what breaks terminals and parsers.
_nasty_text = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(
            ["\x1b", "\x9b", "\x07", "\r", "\n", "\x00", "\u202e", '"', "\\"]
        ),
    ),
    max_size=40,
)
_value = st.one_of(
    st.none(),
    _nasty_text,
    st.integers(),
    st.floats(allow_nan=True),
    st.lists(_nasty_text, max_size=3),
)


@st.composite
def _failure_line(draw: st.DrawFn) -> bytes:
    """A well-formed failure record with hostile field values."""
    record: dict[str, Any] = {"event": "task:failed", "level": "error"}
    for key in (
        "task_name",
        "task_id",
        "error_type",
        "error",
        "request_id",
        "supervisor",
    ):
        if draw(st.booleans()):
            record[key] = draw(_value)
    if draw(st.booleans()):
        record["timestamp"] = draw(st.one_of(_nasty_text, st.floats(), st.integers()))
    if draw(st.booleans()):
        record["exception"] = draw(
            st.one_of(
                _nasty_text,
                st.lists(
                    st.dictionaries(
                        st.sampled_from(
                            ["exc_type", "exc_value", "frames", "is_group"]
                        ),
                        _value,
                    ),
                    max_size=2,
                ),
            )
        )
    text = json.dumps(record, ensure_ascii=draw(st.booleans()))
    return text.encode("utf-8", "surrogatepass")


_soup_line = st.binary(max_size=200).filter(lambda b: b"task:failed" not in b)


@st.composite
def _log(draw: st.DrawFn) -> tuple[bytes, int]:
    """Byte soup with some failures mixed in, and how many failures it holds."""
    parts = draw(
        st.lists(
            st.one_of(
                _soup_line.map(lambda b: (b, False)),
                _failure_line().map(lambda b: (b, True)),
            ),
            max_size=20,
        )
    )
    data = b"\n".join(part for part, _ in parts)
    if parts and draw(st.booleans()):
        data += b"\n"
    if data.startswith(b"\x1f\x8b\x08"):
        # A gzip header makes it a compressed file, and a corrupt one is a
        # file that cannot be read (exit 2), not a bad line.
        data = b"\n" + data
    return data, sum(is_failure for _, is_failure in parts)


def _lines_in(data: bytes) -> int:
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


@_FUZZ
@given(log=_log())
def test_any_bytes_are_counted_and_never_fatal(log: tuple[bytes, int]) -> None:
    """Every line is counted once; every well-formed failure is found."""
    data, failures = log
    scanner = _failures.Scanner()
    scanner.feed_stream(io.BufferedReader(io.BytesIO(data)))  # type: ignore[arg-type]
    result = scanner.result
    assert result.lines == _lines_in(data)
    assert result.failures == failures
    assert sum(group.count for group in result.groups.values()) == failures
    assert result.blank + sum(result.skipped.values()) + failures <= result.lines


@_FUZZ
@given(log=_log(), as_json=st.booleans())
def test_the_command_exits_0_or_1_and_writes_inert_text(
    log: tuple[bytes, int], as_json: bool
) -> None:
    """Through main(): exit 0 or 1, and output with no control characters."""
    data, failures = log
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "fuzz.log")
        with open(path, "wb") as out:
            out.write(data)
        stdout, stderr = io.StringIO(), io.StringIO()
        argv = ["failures", *(["--json"] if as_json else []), path]
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            status = main(argv)
    assert status == (1 if failures else 0)
    for text in (stdout.getvalue(), stderr.getvalue()):
        assert _FORBIDDEN.search(text) is None, text
    if as_json:
        assert stdout.getvalue().isascii()
        groups = [json.loads(line) for line in stdout.getvalue().splitlines()]
        assert sum(group["count"] for group in groups) == failures


_json_like = st.one_of(
    st.binary(max_size=60),
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | _nasty_text,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(_nasty_text, inner, max_size=3)
        ),
        max_leaves=8,
    ).map(lambda value: json.dumps(value).encode("utf-8", "surrogatepass")),
)


@_FUZZ
@given(data=_json_like, pad=st.sampled_from([b"", b" ", b"\n", b"\r\n", b"\t "]))
def test_fast_decoder_agrees_with_json_loads(data: bytes, pad: bytes) -> None:
    """The scanner's own decoder accepts exactly what json.loads does, for UTF-8."""
    line = pad + data + pad
    try:
        line.decode("utf-8")
        expected: object = json.loads(line)
    except (ValueError, RecursionError) as exc:
        expected = type(exc)
    try:
        got: object = _failures._loads(line)
    except (ValueError, RecursionError) as exc:
        got = type(exc)
    if isinstance(expected, type):
        assert isinstance(got, type), (line, got)
    else:
        assert repr(got) == repr(expected)
