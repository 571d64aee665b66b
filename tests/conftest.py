"""Every async test runs on asyncio and on trio (anyio's pytest plugin).

On Python 3.12+ it also runs on asyncio with ``asyncio.eager_task_factory``
installed, where a task factory may run a task's first step inside
``create_task``: the supervisor must still hand back a ``PENDING`` task.
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
    return request.param


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    """No test leaks a structlog configuration into the next."""
    yield
    structlog.reset_defaults()
