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

import anyio

from ._events import safe_log
from ._records import ShutdownReport, make_report
from ._runner import Runner
from ._task import TaskState

__all__ = ["CANCEL_GRACE", "drain_and_cancel"]

#: Seconds cancelled tasks get to unwind after the shutdown deadline before
#: they are reported as abandoned; keeps shutdown within ``timeout + 1 s``.
CANCEL_GRACE = 0.5


async def drain_and_cancel(runner: Runner, timeout: float) -> ShutdownReport:
    """Drain for ``timeout``, then cancel what is left; always accounts for all.

    The cancel phase runs shielded, so even a host that is itself being
    cancelled ends every task in a terminal state before this returns (or
    re-raises the host's cancellation).
    """
    began = time.monotonic()
    services = [job for job in runner.live_jobs() if job.service]
    for job in services:
        job.record.cancel("shutdown")
    ended_before = runner.ended
    interrupted: BaseException | None = None
    try:
        with anyio.move_on_after(timeout):
            await runner.wait_idle()
    except anyio.get_cancelled_exc_class() as exc:
        # The host itself is being cancelled: stop draining, still clean up.
        interrupted = exc
    # Services were stopped, not drained: they are reported as cancelled.
    completed = runner.ended - ended_before - sum(j.record.done for j in services)

    live = [job for job in runner.live_jobs() if not job.service]
    victims = [
        *(job for job in live if not job.record.options.shield),
        *(job for job in services if not job.record.done),
    ]
    shielded = [job for job in live if job.record.options.shield]
    with anyio.CancelScope(shield=True):
        if victims:
            runner.emitter.deadline = anyio.current_time() + CANCEL_GRACE
            for job in victims:
                job.record.cancel("shutdown")
            with anyio.move_on_after(CANCEL_GRACE):
                for job in victims:
                    await job.record.wait_done()
            for job in victims:
                await runner.abandon(job)  # a no-op for tasks that ended
        waiting = [job.record.task_id for job in shielded if not job.record.done]
        if waiting:
            safe_log(
                runner.emitter.log.logger,
                "warning",
                "supervisor:waiting_for_shielded",
                supervisor=runner.name,
                task_ids=waiting,
            )
            runner.emitter.deadline = math.inf
            for job in shielded:
                await job.record.wait_done()
        await runner.wait_idle()
    if interrupted is not None:
        raise interrupted
    cancelled = tuple(
        dict.fromkeys(
            job.record
            for job in (*services, *victims)
            if job.record.state is TaskState.CANCELLED
        )
    )
    return make_report(
        completed=completed,
        cancelled=cancelled,
        services=tuple(job.record for job in services if job.record in cancelled),
        abandoned=tuple(t for t in cancelled if t.abandoned),
        shielded=tuple(job.record for job in shielded),
        duration_s=time.monotonic() - began,
    )
