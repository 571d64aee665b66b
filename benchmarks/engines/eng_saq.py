"""saq: worker ``saq eng_saq.settings``."""

from __future__ import annotations

import asyncio
from typing import Any

from _marks import mark, redis_url, tuned
from saq import Queue

queue = Queue.from_url(redis_url())


async def noop(ctx: Any, *, token: str) -> None:
    mark("done", token)


async def slow(ctx: Any, *, token: str) -> None:
    mark("start", token)
    await asyncio.sleep(3)
    mark("done", token)


settings = {
    "queue": queue,
    "functions": [noop, slow],
    "concurrency": 10,
    # saq's sweep retries an active job whose heartbeat (or timeout) lapsed.
    "timers": {"sweep": 2} if tuned() else {},
}


class Producer:
    async def __aenter__(self) -> Producer:
        self.queue = Queue.from_url(redis_url())
        await self.queue.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.queue.disconnect()

    async def send(self, func: str, token: str) -> None:
        # saq defaults: timeout=10 s, heartbeat=0 (off), retries=1 (no retry).
        extra: dict[str, Any] = {"heartbeat": 2, "retries": 3} if tuned() else {}
        await self.queue.enqueue(func, token=token, **extra)


WORKER = ["saq", "eng_saq.settings", "--quiet"]
