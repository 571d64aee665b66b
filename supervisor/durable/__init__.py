"""Durable background tasks: hand work to Redis, run it on worker processes.

The optional extra ``nursery-supervisor[redis]`` installs what this needs;
the core package never imports it. The app sends with a
:class:`DurableQueue` (asyncio or trio); ``python -m supervisor.durable worker
APP:QUEUE`` runs the tasks under a :class:`~supervisor.Supervisor`, with the
same log lines and events as in-process tasks. See :doc:`/howto/scale-out`.
"""

from __future__ import annotations

from ._queue import DurableOptions, DurableQueue, DurableRecord, DurableSpawner
from ._worker import Worker

__all__ = [
    "DurableOptions",
    "DurableQueue",
    "DurableRecord",
    "DurableSpawner",
    "Worker",
]
