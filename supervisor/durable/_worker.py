"""The worker side: read a queue's stream, run each task under a Supervisor.

The consumer loop is ours rather than taskiq's receiver, measured for a
reason (``benchmarks/engines``): taskiq-redis reclaims a dead worker's
messages only after ten idle minutes and only once new messages arrive, so
a SIGKILLed worker's in-flight task was lost; and it has no heartbeat, so a
task running longer than the idle timeout is handed to a second worker while
it still runs. Here:

- Messages are read with ``XREADGROUP`` only while a slot is free
  (``concurrency``), spawned on a :class:`~supervisor.Supervisor` with the
  sender's options, and acknowledged (``XACK``) after the outcome is stored.
- Every third of ``idle_timeout`` the worker re-claims its in-flight
  messages (``XCLAIM ... JUSTID``, which resets their idle time): live work is
  never taken over. A dead worker's messages go idle, and any worker's
  ``XAUTOCLAIM`` takes them after ``idle_timeout``: at-least-once delivery.
- A message whose record is already terminal (the worker died after storing
  the outcome but before the ack) is acknowledged without running again.
- On SIGTERM the worker stops reading, the supervisor drains then cancels;
  tasks cancelled by that shutdown are not acknowledged, their record goes
  back to ``pending``, and another worker runs them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import math
import time
from collections.abc import Callable
from typing import Any

import anyio
import attrs
import structlog
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

from supervisor import Retry, Supervisor, TaskCancelled, TaskFailed
from supervisor._events import safe_log

from ._queue import GROUP, DurableQueue
from ._wire import json_or_error

__all__ = ["Worker"]

_logger = structlog.get_logger("supervisor.durable")

# Returns the record's state before this delivery and the delivery count; a
# record without an outcome becomes "running" in the same step.
_CLAIM = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'succeeded' or state == 'failed' or state == 'cancelled' then
  return {state, 0}
end
local n = redis.call('HINCRBY', KEYS[1], 'deliveries', 1)
redis.call('HSET', KEYS[1], 'state', 'running', 'started_at', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {state or false, n}
"""


def _exception_class(name: str) -> type[BaseException]:
    module, _, qualname = name.rpartition(".")
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    if not (isinstance(found, type) and issubclass(found, BaseException)):
        raise TypeError(f"{name!r} is not an exception class")
    return found


def _retry(spec: dict[str, Any] | None) -> Retry | None:
    if spec is None:
        return None
    on = tuple(_exception_class(n) for n in spec["on"])
    return Retry(
        attempts=spec["attempts"],
        on=on,
        initial=spec["initial"],
        maximum=spec["maximum"],
        multiplier=spec["multiplier"],
        jitter=spec["jitter"],
    )


@attrs.define(eq=False)
class Worker:
    """Runs a :class:`DurableQueue`'s tasks under one Supervisor until stopped.

    ``concurrency`` is both the supervisor's ``max_concurrency`` and how many
    messages the worker holds at once (so nothing waits unacknowledged in this
    process while another worker is idle). ``supervisor_options`` go to the
    :class:`~supervisor.Supervisor` (``on_event``, ``logger``,
    ``shutdown_timeout``, ...). Runs on asyncio only (redis-py's asyncio
    client); the task functions themselves may be anyio code.
    """

    queue: DurableQueue = attrs.field(
        validator=attrs.validators.instance_of(DurableQueue)
    )
    concurrency: int = 10
    shutdown_timeout: float = 10.0
    max_deliveries: int = 5
    supervisor_options: dict[str, Any] = attrs.field(factory=dict)
    consumer: str = attrs.field(factory=lambda: f"worker-{time.time_ns():x}")
    _redis: Redis | None = attrs.field(default=None, init=False)
    _inflight: set[bytes] = attrs.field(factory=set, init=False)
    # The event exists only inside run() (it belongs to the running loop);
    # the flag lets stop() come before run().
    _stop: anyio.Event | None = attrs.field(default=None, init=False)
    _stopping: bool = attrs.field(default=False, init=False)
    supervisor: Supervisor | None = attrs.field(default=None, init=False)
    _claim_sha: str | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        for field in ("concurrency", "max_deliveries"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{field} must be an int >= 1, got {value!r}")

    def stop(self) -> None:
        """Ask the worker to stop reading, drain, then cancel (as on SIGTERM)."""
        self._stopping = True
        if self._stop is not None:
            self._stop.set()

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until :meth:`stop`; ``task_status.started()`` once consuming."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "supervisor.durable.Worker runs on asyncio only (redis-py's asyncio "
                "client); run it as its own process with `python -m "
                "supervisor.durable worker APP:QUEUE`, or under anyio.run(..., "
                'backend="asyncio")'
            ) from None
        queue = self.queue
        self._stop = stop = anyio.Event()
        if self._stopping:
            stop.set()
        redis = Redis.from_url(queue.url)
        self._redis = redis
        try:
            await redis.xgroup_create(queue.name, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        sup = Supervisor(
            f"worker:{queue.name}",
            max_concurrency=self.concurrency,
            shutdown_timeout=self.shutdown_timeout,
            **self.supervisor_options,
        )
        self.supervisor = sup
        slots = anyio.Semaphore(self.concurrency)
        try:
            # The watchers (one per message: await the outcome, store it, ack)
            # outlive the supervisor's drain, so their group is the outer one;
            # startup() and shutdown() stay at one nesting, as they must.
            async with anyio.create_task_group() as watchers:
                beat = anyio.CancelScope()
                watchers.start_soon(self._heartbeat, beat)
                await sup.startup()
                try:
                    async with anyio.create_task_group() as loops:
                        loops.start_soon(self._read, sup, slots, watchers)
                        task_status.started()
                        safe_log(
                            _logger, "info", "durable:worker_started",
                            queue=queue.name, consumer=self.consumer,
                            concurrency=self.concurrency,
                        )  # fmt: skip
                        await stop.wait()
                        loops.cancel_scope.cancel()
                finally:
                    report = await sup.shutdown()
                    beat.cancel()  # claims stay renewed through the drain
                safe_log(
                    _logger, "info", "durable:worker_stopped", queue=queue.name,
                    completed=report.completed, cancelled=len(report.cancelled),
                )  # fmt: skip
        finally:
            with anyio.CancelScope(shield=True):
                await redis.aclose()

    async def _read(
        self, sup: Supervisor, slots: anyio.Semaphore, watchers: anyio.abc.TaskGroup
    ) -> None:
        """Fetch as many messages as there are free slots: reclaimed ones first."""
        redis = self._redis
        assert redis is not None
        queue = self.queue
        idle_ms = max(1, int(queue.idle_timeout * 1000))
        next_claim = -math.inf
        while True:
            await slots.acquire()
            free = 1
            with contextlib.suppress(anyio.WouldBlock):
                while free < self.concurrency:
                    slots.acquire_nowait()
                    free += 1
            entries: list[Any] = []
            try:
                if time.monotonic() >= next_claim:
                    claimed: Any = await redis.xautoclaim(
                        queue.name, GROUP, self.consumer, idle_ms, "0-0", count=free
                    )
                    entries = [e for e in claimed[1] if e[0] not in self._inflight]
                    # A full batch may mean more are waiting: look again at once.
                    if len(claimed[1]) < free:
                        next_claim = time.monotonic() + queue.idle_timeout / 2
                if not entries:
                    fetched: Any = await redis.xreadgroup(
                        GROUP, self.consumer, {queue.name: ">"}, count=free, block=250
                    )
                    entries = fetched[0][1] if fetched else []
            except BaseException:
                for _ in range(free):
                    slots.release()
                raise
            for _ in range(free - len(entries)):
                slots.release()
            for msg_id, fields in entries:
                self._inflight.add(msg_id)
                watchers.start_soon(self._handle, sup, slots, msg_id, fields)

    async def _heartbeat(self, scope: anyio.CancelScope) -> None:
        redis = self._redis
        assert redis is not None
        with scope:
            while True:
                await anyio.sleep(self.queue.idle_timeout / 3)
                if self._inflight:
                    await redis.xclaim(
                        self.queue.name, GROUP, self.consumer, 0,
                        list(self._inflight), justid=True,
                    )  # fmt: skip

    async def _handle(
        self, sup: Supervisor, slots: anyio.Semaphore, msg_id: bytes, fields: Any
    ) -> None:
        try:
            await self._handle_one(sup, msg_id, fields)
        finally:
            self._inflight.discard(msg_id)
            slots.release()

    async def _finish(self, msg_id: bytes, task_id: str, **record: Any) -> None:
        mapping: Any = record
        redis = self._redis
        assert redis is not None
        key = self.queue.record_key(task_id)
        with anyio.CancelScope(shield=True):
            async with redis.pipeline(transaction=True) as pipe:
                if record:
                    pipe.hset(key, mapping=mapping)
                    pipe.expire(key, int(self.queue.ttl))
                pipe.xack(self.queue.name, GROUP, msg_id)
                # Acknowledged entries would otherwise stay in the stream for
                # ever; the record keeps what is worth keeping, for ttl.
                pipe.xdel(self.queue.name, msg_id)
                await pipe.execute()

    async def _claim(self, key: str, now: float, ttl: int) -> tuple[Any, int]:
        """Mark the record running (one round trip) unless it has an outcome."""
        redis = self._redis
        assert redis is not None
        if self._claim_sha is None:
            self._claim_sha = str(await redis.script_load(_CLAIM))
        try:
            found: Any = await redis.evalsha(self._claim_sha, 1, key, now, ttl)
        except NoScriptError:  # Redis restarted and forgot the script
            self._claim_sha = None
            return await self._claim(key, now, ttl)
        return found[0], int(found[1])

    async def _handle_one(self, sup: Supervisor, msg_id: bytes, fields: Any) -> None:
        redis = self._redis
        assert redis is not None
        queue = self.queue
        try:
            message = json.loads(fields[b"data"])
            task_id, task_name = message["task_id"], message["task_name"]
            args, kwargs = message["args"], message["kwargs"]
            labels = message.get("labels") or {}
        except (KeyError, TypeError, ValueError) as exc:
            safe_log(
                _logger, "error", "durable:bad_message", queue=queue.name,
                message_id=msg_id.decode(), error=repr(exc),
            )  # fmt: skip
            await self._finish(msg_id, "invalid")
            return
        key = queue.record_key(task_id)
        state, deliveries = await self._claim(key, time.time(), int(queue.ttl))
        if state in (b"succeeded", b"failed", b"cancelled"):
            safe_log(
                _logger, "info", "durable:duplicate", queue=queue.name,
                task_id=task_id, state=state.decode(),
            )  # fmt: skip
            await self._finish(msg_id, task_id)
            return
        name = labels.get("nursery_name") or task_name
        func: Callable[..., Any] | None = queue.functions.get(task_name)
        problem = None
        if func is None:
            problem = (
                "UnknownTask",
                f"no task named {task_name!r} is registered on this worker's queue "
                f"{queue.name!r}; deploy the worker with the same code as the app",
            )
        elif deliveries > self.max_deliveries:
            problem = (
                "TooManyDeliveries",
                f"delivered {deliveries} times without finishing (a worker died "
                f"each time?); giving up after max_deliveries={self.max_deliveries}",
            )
        if problem is not None:
            safe_log(
                _logger, "error", "task:failed", task_id=task_id, task_name=name,
                supervisor=sup.name, state="failed", attempt=0,
                error_type=problem[0], error=problem[1],
            )  # fmt: skip
            await self._finish(
                msg_id, task_id, state="failed", error=problem[1],
                error_type=problem[0], completed_at=time.time(),
            )  # fmt: skip
            return
        assert func is not None
        try:
            spawner = sup.options(
                name=name,
                task_id=task_id,
                timeout=labels.get("nursery_timeout"),
                retry=_retry(labels.get("nursery_retry")),
            )
            # The task copies this context at spawn: its log lines get the
            # sender's request_id and the like.
            context = labels.get("nursery_context") or {}
            with structlog.contextvars.bound_contextvars(**context):
                task = await spawner.spawn(func, *args, **kwargs)
        except Exception as exc:  # bad arguments, unknown exception class, ...
            safe_log(
                _logger, "error", "task:failed", task_id=task_id, task_name=name,
                supervisor=sup.name, state="failed", attempt=0,
                error_type=type(exc).__name__, error=str(exc),
            )  # fmt: skip
            await self._finish(
                msg_id, task_id, state="failed", error=str(exc),
                error_type=type(exc).__name__, completed_at=time.time(),
            )  # fmt: skip
            return
        try:
            result = await task.wait()
        except TaskCancelled:
            # Cancelled by this worker's shutdown: leave it unacknowledged so
            # that another worker runs it again.
            with anyio.CancelScope(shield=True):
                await redis.hset(key, "state", "pending")
            return
        except TaskFailed as exc:
            error = exc.__cause__
            await self._finish(
                msg_id, task_id, state="failed", attempts=task.attempts,
                error=str(error), error_type=type(error).__name__,
                completed_at=time.time(),
            )  # fmt: skip
            return
        encoded, result_error = json_or_error(result)
        record: dict[str, Any] = {
            "state": "succeeded",
            "attempts": task.attempts,
            "result": encoded,
            "completed_at": time.time(),
        }
        if result_error is not None:
            record["error"] = result_error
        await self._finish(msg_id, task_id, **record)
