"""Every async test runs on asyncio and on trio (anyio's pytest plugin).

On Python 3.12+ it also runs on asyncio with ``asyncio.eager_task_factory``
installed, where a task factory may run a task's first step inside
``create_task``: the supervisor must still hand back a ``PENDING`` task.

A test marked ``@pytest.mark.virtual_time`` runs its trio case on trio's
``MockClock(autojump_threshold=0)``: whenever every task is blocked the clock
jumps to the next deadline, so backoffs, restart periods and shutdown
deadlines cost no real time there, and elapsed times are exact. Only for tests
that never wait on a thread or a process: a virtual clock jumps past a
``fail_after`` while a thread works. asyncio has no virtual clock; its case
keeps the test's small real durations.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import structlog


def _eager_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    return loop


_BACKENDS = [
    pytest.param("asyncio", id="asyncio"),
    pytest.param("trio", id="trio"),
]
if sys.version_info >= (3, 12):
    _BACKENDS.append(
        pytest.param(("asyncio", {"loop_factory": _eager_loop}), id="asyncio+eager")
    )


@pytest.fixture(params=_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    if request.param == "trio" and request.node.get_closest_marker("virtual_time"):
        from trio.testing import MockClock  # trio is an optional extra

        return ("trio", {"clock": MockClock(autojump_threshold=0)})
    return request.param


@pytest.fixture
def virtual_clock(anyio_backend: Any) -> bool:
    """Whether this case runs on trio's autojumping MockClock (exact times)."""
    return isinstance(anyio_backend, tuple) and "clock" in anyio_backend[1]


@pytest.fixture
def seconds(virtual_clock: bool) -> float:
    """One second of a ``virtual_time`` test: real on trio's MockClock, 4 ms else.

    So a test can use production-sized backoffs and periods (``5 * seconds``)
    and still check the same behaviour on asyncio in real time, quickly.
    """
    return 1.0 if virtual_clock else 0.004


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    """No test leaks a structlog configuration into the next."""
    yield
    structlog.reset_defaults()
