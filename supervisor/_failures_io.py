"""Open the log sources of ``python -m supervisor failures``: files, FIFOs, stdin, gzip.

What a user may pass as a log, and what happens:

- a regular file, plain or gzip-compressed: compression is detected from
  the gzip magic bytes rather than trusted from the name, so rotated logs
  work whatever they are called;
- ``-``: standard input (a pipe, a file redirected in, ``kubectl logs |``);
- a FIFO, including the ``/dev/fd/63`` of a shell's process substitution
  (``<(zcat app.log.*.gz)``): read as it is written.  Opening a FIFO for
  reading normally blocks until some process opens it for writing, which
  with no writer at all is a hang; it is opened without blocking instead,
  and when nothing arrives within :data:`FIFO_WAIT` seconds and no process
  holds it open for writing, the command says so and stops;
- a directory, a missing or unreadable file: a :class:`ReadError` whose
  message names the source, says why and what to pass instead.

:func:`check_source` runs these checks before the scan starts, so a
mistyped name fails at once instead of after a long scan of the files
before it.  Stdlib only, and nothing from the rest of the package.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import select
import stat
import sys
import zlib
from collections.abc import Iterator
from typing import IO, Any, cast

__all__ = ["FIFO_WAIT", "ReadError", "cannot_read", "check_source", "open_source"]

# How long a FIFO may stay silent, with no process holding it open for
# writing, before the command gives up on it.  A writer that is connected
# but quiet is waited for without limit, like any live stream.
FIFO_WAIT = 10.0

# The gzip magic and deflate, the one method gzip defines (RFC 1952): three
# bytes, so that a plain log that merely starts with the two magic bytes is
# not mistaken for a corrupt gzip.
_GZIP_MAGIC = b"\x1f\x8b\x08"
# Read buffers.  A C-level buffer in front of GzipFile turns its per-line
# Python call into a per-64-KiB one: a quarter faster on gzip logs, and a
# line too long to keep is skipped at the speed of decompression.
_BUFFER = 1 << 16


class ReadError(Exception):
    """A log source could not be opened or read; the message names it."""


def cannot_read(name: str, exc: BaseException) -> str:
    """The message for a source that failed with *exc*: which, why, what to do."""
    if isinstance(exc, IsADirectoryError):
        return _directory(name)
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


def _directory(name: str) -> str:
    pattern = os.path.join(name, "*.log")
    return (
        f"cannot read {name!r}: it is a directory; pass the log files in it "
        f"instead, such as {pattern}"
    )


def check_source(name: str) -> None:
    """Fail now, with a clear message, if *name* cannot be a log source.

    Raises:
        ReadError: *name* is missing, a directory, or not readable.
    """
    if name == "-":
        return
    try:
        info = os.stat(name)
    except OSError as exc:
        raise ReadError(cannot_read(name, exc)) from exc
    if stat.S_ISDIR(info.st_mode):
        raise ReadError(_directory(name))
    if stat.S_ISFIFO(info.st_mode):
        # Opening it here would block (or, without blocking, take the data
        # of whoever writes first); open_source opens it once, carefully.
        if not os.access(name, os.R_OK):
            raise ReadError(cannot_read(name, PermissionError(13, "Permission denied")))
        return
    try:
        with open(name, "rb"):
            pass
    except OSError as exc:
        raise ReadError(cannot_read(name, exc)) from exc


@contextlib.contextmanager
def open_source(name: str) -> Iterator[IO[bytes]]:
    """Open *name* (``-`` is stdin) for binary reading, un-gzipping if needed.

    Raises:
        ReadError: the source cannot be opened.
    """
    stream: IO[bytes]
    with contextlib.ExitStack() as stack:
        if name == "-":
            stream = sys.stdin.buffer  # not closed: it is not ours
        else:
            try:
                is_fifo = stat.S_ISFIFO(os.stat(name).st_mode)
                stream = (
                    _open_fifo(name) if is_fifo else open(name, "rb", buffering=_BUFFER)  # noqa: SIM115
                )
            except OSError as exc:
                raise ReadError(cannot_read(name, exc)) from exc
            stack.enter_context(stream)
        if not hasattr(stream, "peek"):
            # Only buffered readers can look ahead at the magic bytes
            # without consuming them; wrap anything else (tests' BytesIO).
            stream = io.BufferedReader(cast(Any, stream))
        head = cast(io.BufferedReader, stream).peek(3)[:3]
        if head == _GZIP_MAGIC:
            unzipped = gzip.GzipFile(fileobj=stream, mode="rb")
            stream = stack.enter_context(
                io.BufferedReader(cast(Any, unzipped), buffer_size=_BUFFER)
            )
        yield stream


def _open_fifo(name: str) -> IO[bytes]:
    """Open a FIFO without hanging when nobody will ever write to it."""
    fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK)
    try:
        ready, _, _ = select.select([fd], [], [], FIFO_WAIT)
        head = b""
        if not ready:
            # Nothing to read yet.  A non-blocking read tells the two cases
            # apart: EAGAIN while some process holds the FIFO open for
            # writing (a quiet live stream: wait for it), end of file when
            # none does (nobody is coming: say so).
            try:
                head = os.read(fd, 1 << 16)
            except BlockingIOError:
                pass
            else:
                if not head:
                    msg = (
                        f"cannot read {name!r}: it is a FIFO and no process has "
                        f"written to it or held it open for writing within "
                        f"{FIFO_WAIT:g} s; start the writer first, or pipe the "
                        "log to standard input instead"
                    )
                    raise ReadError(msg)
        os.set_blocking(fd, True)
        raw: io.RawIOBase = io.FileIO(fd, "rb", closefd=True)
    except BaseException:
        os.close(fd)
        raise
    if head:
        raw = _Prefixed(head, raw)
    return io.BufferedReader(raw, buffer_size=_BUFFER)


class _Prefixed(io.RawIOBase):
    """A raw stream that first returns *head*, bytes already read from *raw*."""

    def __init__(self, head: bytes, raw: io.RawIOBase) -> None:
        self._head = head
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        if self._head:
            size = min(len(buffer), len(self._head))
            buffer[:size] = self._head[:size]
            self._head = self._head[size:]
            return size
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()
