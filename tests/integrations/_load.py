"""Bounded concurrent HTTP load against a real server, in a thread of its own.

:class:`Load` sends ``total`` requests, at most ``concurrency`` at a time,
with httpx from an asyncio loop in a background thread, so that the test's
own thread can send SIGTERM while the load is still going. It records every
task id a client got back (only those count: a request refused or cut off by
the shutdown spawned nothing the client knows of).
"""

from __future__ import annotations

import threading
from typing import Any

import anyio
import httpx


class Load:
    """Requests ``POST /spawn/<kind>`` in a cycle of ``kinds``; keeps the ids."""

    def __init__(
        self, url: str, *, total: int, concurrency: int, kinds: tuple[str, ...]
    ) -> None:
        self.url = url
        self.total = total
        self.concurrency = concurrency
        self.kinds = kinds
        self.task_ids: dict[str, str] = {}  # task id -> kind
        self.statuses: dict[int, int] = {}
        self.errors = 0
        self.answered = threading.Event()  # half the requests have answers
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the load never finished"

    def _run(self) -> None:
        anyio.run(self._main)

    async def _main(self) -> None:
        limiter = anyio.Semaphore(self.concurrency)
        limits = httpx.Limits(max_connections=self.concurrency)
        async with (
            httpx.AsyncClient(base_url=self.url, timeout=10.0, limits=limits) as client,
            anyio.create_task_group() as tg,
        ):
            for i in range(self.total):
                await limiter.acquire()
                tg.start_soon(self._one, client, limiter, i)

    async def _one(self, client: httpx.AsyncClient, limiter: Any, i: int) -> None:
        kind = self.kinds[i % len(self.kinds)]
        try:
            response = await client.post(f"/spawn/{kind}")
        except httpx.HTTPError:
            with self._lock:
                self.errors += 1
        else:
            with self._lock:
                self.statuses[response.status_code] = (
                    self.statuses.get(response.status_code, 0) + 1
                )
                if response.status_code == 200:
                    self.task_ids[response.json()["task_id"]] = kind
                if sum(self.statuses.values()) >= self.total // 2:
                    self.answered.set()
        finally:
            limiter.release()
