"""Run redis-py's asyncio client from asyncio or from trio.

redis-py's asyncio client (like every Redis engine measured except streaq)
runs only on an asyncio event loop. On asyncio we call it directly; on trio
the queue owns one daemon thread running an asyncio loop, and each call is
handed to it with ``anyio.to_thread.run_sync``. That costs a thread hop per
Redis call (tens of microseconds), which is small next to the round trip.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import anyio

T = TypeVar("T")

__all__ = ["Bridge"]


class Bridge:
    """Where a queue's Redis coroutines run: this loop, or a loop thread."""

    __slots__ = ("_loop", "_thread")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # trio (or another non-asyncio loop)
            pass
        else:
            return
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=loop.run_forever, name="supervisor-durable-loop", daemon=True
        )
        thread.start()
        self._loop, self._thread = loop, thread

    async def run(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        loop = self._loop
        if loop is None:
            return await make()
        future = asyncio.run_coroutine_threadsafe(make(), loop)
        return await anyio.to_thread.run_sync(future.result)

    async def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        await anyio.to_thread.run_sync(thread.join)
        loop.close()
        self._loop = self._thread = None
