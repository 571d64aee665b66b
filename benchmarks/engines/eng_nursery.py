"""Our adapter, supervisor.durable: ``python -m supervisor.durable worker``."""

from __future__ import annotations

import anyio
from _marks import mark, redis_url, tuned

from supervisor.durable import DurableQueue

queue = DurableQueue(redis_url(), name="bench", idle_timeout=5 if tuned() else 30)


@queue.task
async def noop(token: str) -> None:
    mark("done", token)


@queue.task
async def slow(token: str) -> None:
    mark("start", token)
    await anyio.sleep(3)
    mark("done", token)


class Producer:
    async def __aenter__(self) -> Producer:
        await queue.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await queue.aclose()

    async def send(self, func: str, token: str) -> None:
        await queue.spawn(func, token)


WORKER = ["python", "-m", "supervisor.durable", "worker", "eng_nursery:queue"]
