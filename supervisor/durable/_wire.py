"""What goes over Redis: JSON messages in taskiq's format, JSON task records.

Messages are the JSON of taskiq's ``TaskiqMessage`` (``task_id``,
``task_name``, ``labels``, ``labels_types``, ``args``, ``kwargs``) in the
``data`` field of a Redis stream entry, as taskiq-redis's
``RedisStreamBroker`` writes them; our per-task options travel as labels.
Nothing is ever pickled: a worker must not run code chosen by whoever can
write to Redis, so arguments and results are plain JSON and functions are
referred to by their registered name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["dumps_call", "encode_message", "json_or_error"]


def _check(value: Any, where: str, task: str) -> str:
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{where} of durable task {task!r} is not JSON-serializable: {value!r} "
            f"({exc}); durable tasks take plain data (str, int, float, bool, None, "
            "and lists and dicts of them): pass an id and load the object in the "
            "task"
        ) from None


def dumps_call(task: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Check every argument; the error names the one that cannot be sent."""
    for i, arg in enumerate(args):
        _check(arg, f"positional argument {i}", task)
    for key, arg in kwargs.items():
        _check(arg, f"keyword argument {key!r}", task)


def encode_message(
    task_id: str,
    task: str,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    labels: Mapping[str, Any],
) -> bytes:
    dumps_call(task, args, kwargs)
    return json.dumps(
        {
            "task_id": task_id,
            "task_name": task,
            "labels": dict(labels),
            "labels_types": None,
            "args": list(args),
            "kwargs": dict(kwargs),
        },
        separators=(",", ":"),
    ).encode()


def json_or_error(value: Any) -> tuple[str, str | None]:
    """A result as JSON, or ``"null"`` and why it could not be stored."""
    try:
        return json.dumps(value, allow_nan=False), None
    except (TypeError, ValueError):
        return "null", f"result {value!r} is not JSON-serializable; not stored"
