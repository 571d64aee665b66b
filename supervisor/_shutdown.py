"""The shutdown sequence: drain, cancel at the deadline, abandon, report.

1. The supervisor already refuses new spawns (it is ``CLOSING``).
   Services (``start_service``) are cancelled first, with reason
   ``"shutdown"``: they never end by themselves, and stopping consumers and
   pollers first is what lets the work they started drain (OTP stops
   children before their supervisor, too).
2. Drain: wait up to ``timeout`` for every task to end on its own.
3. Cancel every task left that is not shielded, with reason ``"shutdown"``.
4. Give them :data:`CANCEL_GRACE` seconds to unwind; event handlers get no
   time beyond that either.
5. Abandon what is still not done: worker threads (Python cannot interrupt
   them) and asyncio tasks that swallowed their cancellation. Their records
   end ``CANCELLED`` with ``abandoned=True``.
6. Wait for shielded tasks, saying so in the log.

So shutdown takes at most ``timeout + CANCEL_GRACE`` plus scheduling, unless
a task is shielded on purpose.
"""

from __future__ import annotations

import math
import time
from typing import Any

import anyio

from ._events import safe_log
from ._records import ShutdownReport
from ._runner import Runner
from ._task import TaskState

__all__ = ["CANCEL_GRACE", "drain_and_cancel"]

#: Seconds cancelled tasks get to unwind after the shutdown deadline before
#: they are reported as abandoned; keeps shutdown within ``timeout + 1 s``.
CANCEL_GRACE = 0.5


async def drain_and_cancel(
    runner: Runner, timeout: float, *, logger: Any, name: str
) -> ShutdownReport:
    """Drain for ``timeout``, then cancel what is left; always accounts for all.

    The cancel phase runs shielded, so even a host that is itself being
    cancelled ends every task in a terminal state before this returns (or
    re-raises the host's cancellation).
    """
    began = time.monotonic()
    services = [t for t in runner.live.values() if t._service]
    for service in services:
        service.cancel("shutdown")
    ended_before = runner.terminal_total
    interrupted: BaseException | None = None
    try:
        with anyio.move_on_after(timeout):
            await runner.wait_idle()
    except anyio.get_cancelled_exc_class() as exc:
        # The host itself is being cancelled: stop draining, still clean up.
        interrupted = exc
    # Services were stopped, not drained: they are reported as cancelled.
    completed = runner.terminal_total - ended_before - sum(t.done for t in services)

    live = [t for t in runner.live.values() if not t._service]
    victims = [
        *(t for t in live if not t.options.shield),
        *(s for s in services if not s.done),
    ]
    shielded = [t for t in live if t.options.shield]
    with anyio.CancelScope(shield=True):
        if victims:
            runner.hard_deadline = anyio.current_time() + CANCEL_GRACE
            for task in victims:
                task.cancel("shutdown")
            with anyio.move_on_after(CANCEL_GRACE):
                for task in victims:
                    await task.wait_done()
            for task in victims:
                await runner.abandon(task)  # a no-op for tasks that ended
        waiting = [t.task_id for t in shielded if not t.done]
        if waiting:
            safe_log(
                logger,
                "warning",
                "supervisor:waiting_for_shielded",
                supervisor=name,
                task_ids=waiting,
            )
            runner.hard_deadline = math.inf
            for task in shielded:
                await task.wait_done()
        await runner.wait_idle()
    if interrupted is not None:
        raise interrupted
    cancelled = tuple(
        dict.fromkeys(
            t for t in (*services, *victims) if t.state is TaskState.CANCELLED
        )
    )
    return ShutdownReport(
        completed=completed,
        cancelled=cancelled,
        abandoned=tuple(t for t in cancelled if t.abandoned),
        shielded=tuple(shielded),
        duration_s=time.monotonic() - began,
    )
