"""The app-scoped nursery, native to each backend, behind one small interface.

Why not ``anyio.create_task_group()``? Measured on this project's 2-core
machine, anyio's ``TaskGroup.start_soon`` costs about 30 µs per spawn against
5 µs for ``loop.create_task`` and 8 µs for a trio nursery (SPEC 8), and an
anyio ``CancelScope`` per task halves end-to-end throughput on both backends.
So each backend spawns natively and gives every task the cheapest handle that
can cancel it alone:

* asyncio: the ``asyncio.Task`` itself (``Task.cancel(msg)``). Tasks are not
  children of the host's anyio cancel scopes; the supervisor cancels them
  explicitly when it shuts down or its host body fails, which is what a
  nursery would do. A plain ``Task.cancel()`` would pierce an anyio
  ``CancelScope(shield=True)`` the task entered itself, so a task inside one
  is cancelled only once it has left it (see :func:`_in_anyio_shield`), as
  on trio. Tasks are built with ``asyncio.Task(...)`` rather than
  ``loop.create_task``, so that an eager task factory (Python 3.12+) cannot
  run a body inside ``spawn``: a spawned task is ``PENDING`` until the loop
  starts it, whatever the factory.
* trio: a real ``trio.open_nursery()`` opened in the host task, and one
  ``trio.CancelScope`` per task, entered by the task's body (trio has no
  per-task cancel otherwise; see the benchmarks' README for what it costs).

A backend never sees a task record: it starts a body, returns the native
handle, and cancels a handle it is given. The runner (``_runner.py``) keeps
the handle in the task's job and never lets an exception escape into the
native nursery, so the host task is never cancelled under a server's feet; fatal
errors travel through the supervisor instead (SPEC 3).

Everything that is not on the per-task hot path (limiters, threads, events,
timeouts, the host's own scopes) uses anyio.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol

import anyio

from .exceptions import SupervisorError

__all__ = ["AsyncioBackend", "Backend", "TrioBackend", "current_backend"]

Body = Callable[[Any], Coroutine[Any, Any, None]]

_MISNESTED = (
    "shutdown() must be awaited in the same task and the same cancel-scope "
    "nesting as startup(): pass shutdown(timeout=...) instead of wrapping it in "
    "your own move_on_after()/fail_after()/CancelScope, and call it from the "
    "lifespan task that called startup()"
)


class Backend(Protocol):
    """What the supervisor needs from an event loop."""

    cancelled_exc: type[BaseException]
    #: Makes the per-task cancel scope a body enters first (its handle), or
    #: None where the native task is its own handle (asyncio).
    new_scope: Callable[..., Any] | None

    async def open(self) -> None:
        """Open the nursery in the host task."""

    def spawn(self, body: Body, arg: Any) -> Any:
        """Start ``body(arg)`` as a native task in the current context.

        Returns the native handle that :meth:`cancel` takes (None where the
        body's own scope is the handle). The body never runs before this
        returns.
        """

    def cancel(self, handle: Any, reason: str) -> None:
        """Cancel the one task behind ``handle``."""

    def absorb_cancel(self, exc: BaseException, *, ours: bool) -> None:
        """Called by the runner after recording a cancellation it caught.

        ``ours``: the supervisor asked for it (``task.cancel()``, shutdown).
        """

    def check_nesting(self) -> None:
        """Raise SupervisorError if the host's scopes are not as startup left them."""

    async def close(self) -> None:
        """Close the nursery; every task has ended by now (or is shielded)."""


#: How often a cancellation waiting for a task's anyio shield to end looks again.
_SHIELD_POLL_S = 0.01
_NO_STATES: Mapping[Any, Any] = {}


def _in_anyio_shield(task: asyncio.Task[Any]) -> bool:
    """Whether ``task`` is inside an anyio ``CancelScope(shield=True)`` now.

    anyio has no public way to ask this about another task, and
    ``Task.cancel()`` does not consult anyio, so this reads the per-task scope
    state anyio's asyncio backend keeps (innermost scope, then its parents).
    It is read only when a task is cancelled, never on the hot path, and
    nothing is imported for it: if anyio's asyncio backend is not loaded, no
    anyio scope exists on this loop. If anyio's internals change shape it
    answers False (the plain asyncio behaviour: shields are pierced) and
    ``test_faults`` fails, which is the signal to revisit it.
    """
    backend = sys.modules.get("anyio._backends._asyncio")
    states: Mapping[Any, Any] = getattr(backend, "_task_states", _NO_STATES)
    state = states.get(task)
    scope = getattr(state, "cancel_scope", None)
    while scope is not None:
        if getattr(scope, "shield", False):
            return True
        scope = getattr(scope, "_parent_scope", None)
    return False


class AsyncioBackend:
    """Native ``asyncio`` tasks; the supervisor's records keep them referenced."""

    cancelled_exc: type[BaseException] = asyncio.CancelledError
    new_scope: Callable[..., Any] | None = None

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.Task
        # An anyio scope entered in the host at startup, so that a shutdown()
        # from the wrong nesting is caught *before* anything changes (anyio
        # checks misnesting up front and raises RuntimeError).
        self._marker: anyio.CancelScope | None = None

    async def open(self) -> None:
        self._marker = anyio.CancelScope()
        self._marker.__enter__()

    def spawn(self, body: Body, arg: Any) -> Any:
        # Shielding is the runner's business on asyncio: shutdown just never
        # cancels a shielded task.
        return self._task(body(arg), loop=self._loop)

    def cancel(self, handle: Any, reason: str) -> None:
        if handle.done():
            return
        if _in_anyio_shield(handle):
            # Deliver it once the task is out of its shield, as anyio would;
            # until then nothing is interrupted. Rare (shutdown, cancel()),
            # never on the spawn path; a task left shielded past the grace
            # is abandoned by the runner meanwhile and keeps its books.
            self._loop.call_later(_SHIELD_POLL_S, self.cancel, handle, reason)
            return
        handle.cancel(reason)

    def absorb_cancel(self, exc: BaseException, *, ours: bool) -> None:
        current = asyncio.current_task()
        if not ours or current is None:
            # Not ours (e.g. the loop is closing): keep propagating it.
            raise exc
        while current.cancelling():
            current.uncancel()

    def check_nesting(self) -> None:
        marker = self._marker
        if marker is None:
            return
        try:
            marker.__exit__(None, None, None)
        except RuntimeError as exc:
            raise SupervisorError(_MISNESTED) from exc
        self._marker = None

    async def close(self) -> None:
        self.check_nesting()


class TrioBackend:
    """A trio nursery opened in the host task, one ``CancelScope`` per task."""

    def __init__(self) -> None:
        import trio  # noqa: PLC0415 - trio is an optional extra

        self._trio = trio
        self.cancelled_exc: type[BaseException] = trio.Cancelled
        # Made by the body itself, not at spawn: the spawn loop stays as
        # cheap as the nursery's own start_soon.
        self.new_scope: Callable[..., Any] | None = trio.CancelScope
        self._manager: contextlib.AbstractAsyncContextManager[Any] | None = None
        self._nursery: Any = None

    async def open(self) -> None:
        self._manager = self._trio.open_nursery()
        self._nursery = await self._manager.__aenter__()

    def spawn(self, body: Body, arg: Any) -> Any:
        self._nursery.start_soon(body, arg)

    def cancel(self, handle: Any, reason: str) -> None:
        handle.cancel()

    def absorb_cancel(self, exc: BaseException, *, ours: bool) -> None:
        # trio delivers Cancelled until the cancelled scope is exited; letting
        # it out lets the task's own scope (or the host's) absorb it.
        raise exc

    def check_nesting(self) -> None:
        if self._nursery is None:
            return
        # trio repairs a misnested scope exit only after it has changed state,
        # so look before exiting. trio has no public accessor for the
        # innermost scope of a task; degrade to no check if it moves.
        status = getattr(self._trio.lowlevel.current_task(), "_cancel_status", None)
        innermost = getattr(status, "_scope", self._nursery.cancel_scope)
        if innermost is not self._nursery.cancel_scope:
            raise SupervisorError(_MISNESTED)

    async def close(self) -> None:
        if self._manager is None:
            return
        self.check_nesting()
        manager, self._manager = self._manager, None
        await manager.__aexit__(None, None, None)


def current_backend() -> Backend:
    """The backend for the running event loop, with a clear error otherwise."""
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            pass
        else:
            return TrioBackend()
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise SupervisorError(
            "no running event loop: start the supervisor from async code running "
            "under asyncio or trio (e.g. in your app's lifespan)"
        ) from None
    return AsyncioBackend()
