"""Which supervisor is "current": bound to a request, else the only one running.

Integrations bind their supervisor to each request with :func:`bind`; seed
style code (``await add_background_task(...)``) then finds it without
passing it around. Outside a bound request the only running supervisor in
the process is used, so scripts and simple apps need no integration.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING

from .exceptions import SupervisorError, SupervisorNotStarted

if TYPE_CHECKING:
    from ._supervisor import Supervisor

__all__ = ["bind", "current_supervisor"]

_bound: ContextVar[Supervisor | None] = ContextVar("supervisor_bound", default=None)
# Insertion-ordered set of running supervisors (a dict keeps the order stable
# for error messages).
_running: dict[Supervisor, None] = {}


# Called with each supervisor as it starts: the internal hook through which
# supervisor.testing.capture_events() taps supervisors started during a capture.
on_register: list[Callable[[Supervisor], None]] = []


def register(sup: Supervisor) -> None:
    _running[sup] = None
    for listener in list(on_register):
        listener(sup)


def running() -> list[Supervisor]:
    """The supervisors running in this process, oldest first."""
    return list(_running)


def unregister(sup: Supervisor) -> None:
    _running.pop(sup, None)


@contextlib.contextmanager
def bind(sup: Supervisor) -> Iterator[Supervisor]:
    """Make ``sup`` the :func:`current_supervisor` inside the ``with`` block.

    Integrations wrap each request in it. The binding lives in a context
    variable, so tasks spawned inside inherit it.
    """
    token = _bound.set(sup)
    try:
        yield sup
    finally:
        _bound.reset(token)


def current_supervisor() -> Supervisor:
    """The supervisor for the current request, else the only one running.

    Raises :class:`SupervisorNotStarted` when none is running, and
    :class:`SupervisorError` when several are running and none is bound to
    the current context.
    """
    sup = _bound.get()
    if sup is not None:
        return sup
    if len(_running) == 1:
        return next(iter(_running))
    if not _running:
        raise SupervisorNotStarted(
            "no supervisor is running in this process: start one in your app's "
            "lifespan (`async with Supervisor(name='app'):` or `await "
            "sup.startup()`), or wrap the app with an integration such as "
            "supervisor.asgi.SupervisorMiddleware"
        )
    names = ", ".join(repr(s.name) for s in _running)
    raise SupervisorError(
        f"several supervisors are running ({names}) and none is bound to this "
        "context: pass the supervisor explicitly (e.g. "
        "BackgroundTaskManager(supervisor=sup)) or bind one with "
        "supervisor.bind(sup)"
    )
