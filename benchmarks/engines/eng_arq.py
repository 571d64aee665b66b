"""arq: worker ``arq eng_arq.WorkerSettings``."""

from __future__ import annotations

import asyncio
from typing import Any

from _marks import mark, redis_url, tuned
from arq import create_pool
from arq.connections import RedisSettings

SETTINGS = RedisSettings.from_dsn(redis_url())


async def noop(ctx: Any, token: str) -> None:
    mark("done", token)


async def slow(ctx: Any, token: str) -> None:
    mark("start", token)
    await asyncio.sleep(3)
    mark("done", token)


class WorkerSettings:
    functions = [noop, slow]  # noqa: RUF012 - arq reads a class attribute
    redis_settings = SETTINGS
    # arq re-runs a job whose in-progress key expired: job_timeout + 10 s.
    job_timeout = 5 if tuned() else 300


class Producer:
    async def __aenter__(self) -> Producer:
        self.pool = await create_pool(SETTINGS)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pool.aclose()

    async def send(self, func: str, token: str) -> None:
        await self.pool.enqueue_job(func, token)


WORKER = ["arq", "eng_arq.WorkerSettings"]
