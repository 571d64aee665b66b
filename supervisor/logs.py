"""A logging recipe that produces the logs ``python -m supervisor failures`` reads.

The library itself never configures logging: it gets its logger with
``structlog.get_logger("supervisor")`` and leaves the output to the
application, as structlog recommends.  This module is the recipe an
*application* calls once at startup, before it logs anything::

    from supervisor.logs import configure_logging

    configure_logging()  # JSON lines on stdout, INFO and above

Each line is then one JSON object with ``timestamp`` (ISO 8601, UTC),
``level``, ``event``, whatever was bound with
:func:`structlog.contextvars.bind_contextvars` (``request_id``, ...) and, for
failures, a structured traceback under ``exception``.  That is exactly what
the ``failures`` command groups and renders back into readable tracebacks.

Applications that route structlog through the standard library (to share
handlers with uvicorn, for instance) can reuse :func:`json_processors` as the
processor chain instead of calling :func:`configure_logging`.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog
from structlog.processors import ExceptionRenderer
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import Processor

__all__ = ["configure_logging", "json_processors"]

# Accepted by name (any case) or by value; structlog's filtering loggers exist
# only for these, so anything else must be refused here with a clear message
# rather than as a bare KeyError from inside structlog.
_LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "notset": logging.NOTSET,
}

# structlog's ready-made ``dict_tracebacks`` includes every frame's local
# variables (``show_locals=True``).  Locals routinely hold passwords, tokens
# and request bodies, and they make a failure line many kilobytes long, so
# the recipe keeps the frames and leaves the locals out.
_dict_tracebacks = ExceptionRenderer(ExceptionDictTransformer(show_locals=False))


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def json_processors() -> list[Processor]:
    """Return the processor chain that renders one JSON object per log line.

    A fresh list is returned on each call so callers can change it freely.
    The last element is the :class:`~structlog.processors.JSONRenderer`; when
    wiring structlog to the standard library's ``ProcessorFormatter``, use
    ``json_processors()[:-1]`` as the shared pre-chain and the renderer as the
    formatter's final processor.  Tracebacks are structured (a list of dicts
    per chained exception, without local variables) so that
    ``python -m supervisor failures`` can group failures and show them.
    """
    return [
        *_shared_processors(),
        _dict_tracebacks,
        structlog.processors.JSONRenderer(),
    ]


def _console_processors(stream: TextIO) -> list[Processor]:
    # Colours only where a person is looking: escape codes in a file or a
    # pipe make the log unreadable for everything downstream.
    try:
        colors = stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or stream closed
        colors = False
    return [
        *_shared_processors(),
        structlog.dev.set_exc_info,
        structlog.dev.ConsoleRenderer(colors=colors),
    ]


def _min_level(level: int | str) -> int:
    if isinstance(level, str):
        try:
            return _LEVELS[level.lower()]
        except KeyError:
            pass
    elif level in _LEVELS.values():
        return level
    names = ", ".join(name.upper() for name in _LEVELS if name != "warn")
    msg = (
        f"Unknown log level {level!r}; pass one of {names} "
        "(any case) or the matching logging constant such as logging.INFO"
    )
    raise ValueError(msg)


def configure_logging(
    *,
    json: bool = True,
    level: int | str = "INFO",
    stream: TextIO | None = None,
) -> None:
    """Configure structlog for the whole process; call it once, at startup.

    With *json* (the default) every line is a JSON object, the format that
    log pipelines and ``python -m supervisor failures`` read.  With
    ``json=False`` lines are rendered for a person at a terminal by
    structlog's ``ConsoleRenderer`` (coloured only when *stream* is a TTY).
    Lines below *level* (a name such as ``"INFO"`` or a ``logging``
    constant) cost almost nothing: the filtering logger turns them into no-ops.
    *stream* defaults to ``sys.stdout``, looked up when a logger is first used.

    Loggers are cached on first use for speed, so configure before the first
    log call: a logger that has already logged keeps the configuration it was
    first used with, even if this function is called again later.

    Raises:
        ValueError: *level* is not a known log level.
    """
    min_level = _min_level(level)
    if json:
        processors = json_processors()
    else:
        processors = _console_processors(stream if stream is not None else sys.stdout)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(min_level),
        context_class=dict,
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
