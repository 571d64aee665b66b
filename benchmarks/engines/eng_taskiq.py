"""taskiq + taskiq-redis (``RedisStreamBroker``: acknowledged streams).

Worker: ``taskiq worker eng_taskiq:broker --workers 1``.
"""

from __future__ import annotations

import asyncio

from _marks import mark, redis_url, tuned
from taskiq_redis import RedisStreamBroker

# A message read but not acknowledged is claimed by another reader once it
# has been idle idle_timeout ms (default 10 minutes); taskiq's worker acks
# after the result is saved (--ack-type when_saved, the default).
broker = RedisStreamBroker(redis_url(), idle_timeout=5000 if tuned() else 600_000)


@broker.task(task_name="noop")
async def noop(token: str) -> None:
    mark("done", token)


@broker.task(task_name="slow")
async def slow(token: str) -> None:
    mark("start", token)
    await asyncio.sleep(3)
    mark("done", token)


TASKS = {"noop": noop, "slow": slow}


class Producer:
    async def __aenter__(self) -> Producer:
        await broker.startup()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await broker.shutdown()

    async def send(self, func: str, token: str) -> None:
        await TASKS[func].kiq(token)


# Default --ack-type when_saved: acknowledged after the task ran.
WORKER = ["taskiq", "worker", "eng_taskiq:broker", "--workers", "1"]
