"""Helpers for testing code that spawns background tasks.

:func:`capture_events` is to the supervisor's ``task:*`` events what
:func:`structlog.testing.capture_logs` is to log lines: a context manager
that yields a list and fills it with every event emitted while the block
runs, by every supervisor in the process::

    from supervisor.testing import capture_events

    with capture_events() as events:
        async with Supervisor(name="app") as sup:
            await sup.spawn(send_email, to="a@example.com")
    assert [e["event"] for e in events] == ["task:started", "task:succeeded"]

Each event is a plain dict: ``{"event": "task:failed", "task_id": ...,
"name": ..., "supervisor": ..., "attempt": ..., "state": ..., "error": ...,
"error_type": ...}``, the same data an ``on_event`` handler receives, plus the
event's name under ``"event"`` (the key :func:`~structlog.testing.capture_logs`
uses for a log line's event).

Why a process-wide capture rather than a recorder you pass as ``on_event=``:
the supervisor under test is usually built by the code under test (an app
factory, an integration's lifespan), often before the test can reach it, and
it may already have an ``on_event`` handler of its own that the test should
not replace. So the capture taps supervisors instead of configuring them:

* supervisors already running when the block starts are tapped at once (their
  tasks' events are captured from then on);
* supervisors started inside the block are tapped as they start;
* an ``on_event`` handler a supervisor already has still gets every event,
  after the capture has recorded it;
* when the last capture ends, every tap is removed, so a supervisor without a
  handler goes back to the fast path that emits nothing.

Captures may nest or overlap; each sees every event emitted while it is open.
Events are recorded in the order they are emitted, which for one task is
``task:started``, any ``task:retrying``, then one terminal event.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from . import _registry

if TYPE_CHECKING:
    from ._events import TaskEvent
    from ._supervisor import Supervisor

__all__ = ["capture_events"]

_lock = threading.RLock()
# Every capture currently open; each gets its own copy of every event.
_captures: list[list[dict[str, Any]]] = []
# Supervisors we added the listener to, to take it off when the last capture ends.
_tapped: list[Supervisor] = []


def _record(event: TaskEvent) -> None:
    """The listener: one dict per event, into every open capture."""
    data = {"event": event.event, **event.as_data()}
    with _lock:
        for events in _captures:
            events.append(dict(data))


def _tap(sup: Supervisor) -> None:
    if sup in _tapped:
        return
    sup.add_listener(_record)
    _tapped.append(sup)


def _tap_if_capturing(sup: Supervisor) -> None:
    with _lock:
        if _captures:
            _tap(sup)


def _install() -> None:
    _registry.on_register.append(_tap_if_capturing)
    for sup in _registry.running():
        _tap(sup)


def _uninstall() -> None:
    for sup in _tapped:
        sup.remove_listener(_record)
    _tapped.clear()
    if _tap_if_capturing in _registry.on_register:
        _registry.on_register.remove(_tap_if_capturing)


@contextlib.contextmanager
def capture_events() -> Iterator[list[dict[str, Any]]]:
    """Record every ``task:*`` event emitted while the block runs.

    Yields the list the events are appended to (dicts with the event's name
    under ``"event"`` and the handler's data). It works for supervisors
    created and started inside the block and for ones already running, and
    it leaves their own ``on_event`` handlers working. Usable from sync and
    async code; it does not block.
    """
    events: list[dict[str, Any]] = []
    with _lock:
        if not _captures:
            _install()
        _captures.append(events)
    try:
        yield events
    finally:
        with _lock:
            # By identity: two captures holding equal lists are still two.
            for index, open_capture in enumerate(_captures):
                if open_capture is events:
                    del _captures[index]
                    break
            if not _captures:
                _uninstall()
