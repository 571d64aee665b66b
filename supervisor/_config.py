"""The :class:`Supervisor`'s configuration, as one frozen, validated record.

All of a supervisor's options are checked here, once, when it is built
(SPEC 7: a bad value fails at the call that gave it), with the kit in
``_validate.py``. Integrations build the same record from the options they
are given, so a bad option fails when the app is wrapped, not at the first
lifespan.
"""

from __future__ import annotations

from typing import Any

import anyio
import attrs

from . import _validate as v

__all__ = ["SUCCESS_LEVELS", "SupervisorConfig"]

#: Levels a ``task:succeeded`` line may be logged at (``success_level=``).
SUCCESS_LEVELS = ("debug", "info")


def _thread_limit(
    instance: object, attribute: attrs.Attribute[Any], value: Any
) -> None:
    if isinstance(value, anyio.CapacityLimiter):
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            "Supervisor(thread_limit=...) must be a positive int or an "
            f"anyio.CapacityLimiter, got {value!r} ({type(value).__name__})"
        )
    if value <= 0:
        raise ValueError(
            "Supervisor(thread_limit=...) must be a positive int (threads for sync "
            f"tasks) or an anyio.CapacityLimiter, got {value!r}"
        )


@attrs.frozen
class SupervisorConfig:
    """Everything a :class:`Supervisor` is configured with (see its docstring)."""

    name: str = attrs.field(default="app", validator=v.non_empty_str)
    shutdown_timeout: float = attrs.field(default=10.0, validator=v.seconds())
    max_concurrency: int | None = attrs.field(default=None, validator=v.limit())
    max_pending: int | None = attrs.field(default=None, validator=v.limit())
    thread_limit: int | anyio.CapacityLimiter = attrs.field(
        default=40, validator=_thread_limit
    )
    history: int = attrs.field(
        default=1000, validator=v.count(meaning="finished tasks kept for lookup")
    )
    history_ttl: float | None = attrs.field(
        default=None, validator=v.seconds(zero_ok=False, none_ok=True)
    )
    on_event: Any = attrs.field(
        default=None, validator=v.callable_or_none("(event_name, data)")
    )
    logger: Any = None
    event_timeout: float = attrs.field(default=5.0, validator=v.seconds(zero_ok=False))
    success_level: str = attrs.field(
        default="debug", validator=v.choice(SUCCESS_LEVELS)
    )

    def __attrs_post_init__(self) -> None:
        if self.max_pending is not None and self.max_concurrency is None:
            raise ValueError(
                f"Supervisor(max_pending={self.max_pending!r}) needs max_concurrency: "
                "without a concurrency limit no task ever waits. Set max_concurrency "
                "too, or drop max_pending"
            )


v.CALL_NAMES[SupervisorConfig] = "Supervisor"
