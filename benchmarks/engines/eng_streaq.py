"""streaq: worker ``streaq run eng_streaq:worker``."""

from __future__ import annotations

import anyio
from _marks import mark, redis_url, tuned
from streaq import Worker

# streaq renews a running task's claim every 0.9 * idle_timeout; a dead
# worker's tasks are reclaimed once the claim is idle_timeout old.
worker = Worker(redis_url=redis_url(), idle_timeout=5 if tuned() else 60)


@worker.task
async def noop(token: str) -> None:
    mark("done", token)


@worker.task
async def slow(token: str) -> None:
    mark("start", token)
    await anyio.sleep(3)
    mark("done", token)


TASKS = {"noop": noop, "slow": slow}


class Producer:
    async def __aenter__(self) -> Producer:
        await worker.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await worker.__aexit__(None, None, None)

    async def send(self, func: str, token: str) -> None:
        await TASKS[func].enqueue(token)


WORKER = ["streaq", "run", "eng_streaq:worker"]
