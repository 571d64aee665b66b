"""Per-task options, kept apart from the task function's own arguments.

``spawn(func, *args, **kwargs)`` passes every argument to ``func`` unchanged,
so options can never collide with a keyword of ``func`` (a
``send_email(..., timeout=5)`` keeps its ``timeout``). Options are given
through :meth:`Supervisor.options`, which returns a spawner bound to them::

    await sup.options(name="welcome-email", timeout=30).spawn(send_email, to=addr)
"""

from __future__ import annotations

import random
from typing import Any

import attrs

from . import _validate as v

__all__ = ["DEFAULT_OPTIONS", "Retry", "TaskOptions"]


def _retry_or_none(
    instance: object, attribute: attrs.Attribute[Any], value: Any
) -> None:
    if value is not None and not isinstance(value, Retry):
        raise TypeError(
            f"sup.options(retry=...) takes a supervisor.Retry(...) or None, got "
            f"{value!r}; e.g. retry=Retry(attempts=3, on=ConnectionError)"
        )


@attrs.frozen
class Retry:
    """Retry a failing task with exponential backoff and full jitter.

    ``attempts`` is the total number of tries (so ``attempts=3`` means two
    retries). Only exceptions that are instances of ``on`` are retried; any
    other exception fails the task at once. The delay before try *n + 1* is
    ``min(maximum, initial * multiplier ** (n - 1))`` scaled by a random
    factor in ``[1 - jitter, 1]``, so that many tasks failing together do not
    retry in lockstep. While it waits, the task is ``PENDING``; it keeps its
    ``max_concurrency`` slot, so a retry never queues behind new work.
    """

    attempts: int = attrs.field(
        default=3, validator=v.count(minimum=1, meaning="tries, the first included")
    )
    on: type[BaseException] | tuple[type[BaseException], ...] = attrs.field(
        default=Exception, validator=v.exception_types
    )
    initial: float = attrs.field(default=0.1, validator=v.seconds(finite=True))
    maximum: float = attrs.field(default=30.0, validator=v.seconds())
    multiplier: float = attrs.field(default=2.0, validator=v.at_least(1))
    jitter: float = attrs.field(default=1.0, validator=v.number_between(0, 1))

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed try number ``attempt`` (counting from 1)."""
        base = min(self.maximum, self.initial * self.multiplier ** (attempt - 1))
        return base * (1 - self.jitter * random.random())


@attrs.frozen
class TaskOptions:
    """Options for the tasks of one :class:`Spawner` (see :meth:`Supervisor.options`).

    ``name`` names the task in logs and events (default: the function's
    qualified name); ``task_id`` chooses its id (it must not belong to a live
    task); ``timeout`` (seconds per attempt) fails an attempt with
    ``TimeoutError``; ``retry`` retries chosen exceptions with backoff;
    ``shield`` keeps the task from being cancelled at the shutdown deadline.
    """

    name: str | None = attrs.field(default=None, validator=v.optional_str)
    task_id: str | None = attrs.field(default=None, validator=v.optional_str)
    timeout: float | None = attrs.field(
        default=None, validator=v.seconds(zero_ok=False, none_ok=True)
    )
    retry: Retry | None = attrs.field(default=None, validator=_retry_or_none)
    shield: bool = attrs.field(default=False, validator=v.flag)

    @property
    def plain(self) -> bool:
        """True when nothing but a name or id is set: the runner's fast path."""
        return self.timeout is None and self.retry is None and not self.shield


v.CALL_NAMES[TaskOptions] = "sup.options"
DEFAULT_OPTIONS = TaskOptions()
