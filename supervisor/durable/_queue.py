"""The producer side: :class:`DurableQueue`, its options and its records.

A handler that today calls ``await sup.spawn(send_email, to=addr)`` sends the
same call durably with ``await queue.spawn(send_email, to=addr)``: the call
goes to Redis (a stream entry in taskiq-redis's format) and survives this
process; a worker process (``python -m supervisor.durable worker``) runs it
under its own :class:`~supervisor.Supervisor`. The returned
:class:`DurableRecord` is a snapshot; any process that can reach Redis reads
the current one with :meth:`DurableQueue.get` or waits with
:meth:`DurableQueue.wait`.
"""

from __future__ import annotations

import importlib
import inspect
import json
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import anyio
import attrs
import structlog
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from supervisor import Retry, TaskState

from ._bridge import Bridge
from ._wire import encode_message

__all__ = ["DurableOptions", "DurableQueue", "DurableRecord"]

GROUP = "supervisor"  # the Redis consumer group every worker of a queue joins


def _utc(value: Any) -> datetime | None:
    return (
        None if value in (None, b"", "") else datetime.fromtimestamp(float(value), UTC)
    )


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


# One round trip, atomic: the record, its expiry and the stream entry (and,
# with an idempotency key, the key) are written together or not at all; a
# live key returns the id of the task it already names.
_ENQUEUE = """
if KEYS[3] then
  local existing = redis.call('GET', KEYS[3])
  if existing and redis.call('EXISTS', ARGV[6] .. existing) == 1 then
    return existing
  end
  redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[4])
end
redis.call('HSET', KEYS[1], 'name', ARGV[2], 'state', 'pending', 'created_at', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('XADD', KEYS[2], '*', 'data', ARGV[5])
return false
"""


@attrs.frozen
class DurableRecord:
    """A durable task's state as stored in Redis when it was read.

    ``state`` follows :class:`~supervisor.TaskState`; a task that was running
    on a worker that died is ``RUNNING`` until another worker picks it up
    again (``deliveries`` counts how often one did). ``error`` is the error's
    ``str()``, ``error_type`` its class name: exceptions do not cross
    processes, their description does.
    """

    task_id: str
    name: str
    state: TaskState
    result: Any = None
    error: str | None = None
    error_type: str | None = None
    attempts: int = 0
    deliveries: int = 0
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None

    @classmethod
    def from_hash(cls, task_id: str, raw: Mapping[bytes, bytes]) -> DurableRecord:
        get = {k.decode(): v.decode() for k, v in raw.items()}.get
        return cls(
            task_id=task_id,
            name=get("name", ""),
            state=TaskState(get("state", "pending")),
            result=json.loads(get("result", "null")),
            error=get("error"),
            error_type=get("error_type"),
            attempts=int(get("attempts", "0")),
            deliveries=int(get("deliveries", "0")),
            created_at=_utc(get("created_at")),
            started_at=_utc(get("started_at")),
            completed_at=_utc(get("completed_at")),
        )


def _log_context() -> dict[str, Any]:
    """The sender's structlog context variables that JSON carries as they are.

    They travel with the task, so that the worker's lines for it carry the
    same ``request_id`` (and so ``python -m supervisor failures`` can name
    the requests behind a failure); other values are left behind.
    """
    return {
        key: value
        for key, value in structlog.contextvars.get_contextvars().items()
        if value is None or isinstance(value, str | int | float | bool)
    }


def _exception_name(cls: type[BaseException]) -> str:
    name = f"{cls.__module__}.{cls.__qualname__}"
    try:
        found: Any = importlib.import_module(cls.__module__)
        for part in cls.__qualname__.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        found = None
    if found is not cls:
        raise TypeError(
            f"Retry(on=...) of a durable task must name exception classes a worker "
            f"can import, got {cls!r}; define it at module level"
        )
    return name


@attrs.frozen
class DurableOptions:
    """Per-task options of a durable task, apart from the function's arguments.

    ``name``, ``timeout`` and ``retry`` mean what they mean for
    :meth:`Supervisor.options <supervisor.Supervisor.options>` and are applied
    by the worker's supervisor. ``idempotency_key``: a second send with the
    same key (while the first one's record lives) returns the first task's
    record and enqueues nothing; see :doc:`/howto/scale-out`.
    """

    name: str | None = None
    task_id: str | None = None
    timeout: float | None = None
    retry: Retry | None = None
    idempotency_key: str | None = None

    def __attrs_post_init__(self) -> None:
        for field in ("name", "task_id", "idempotency_key"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, str) or not value):
                raise TypeError(f"{field} must be a non-empty str, got {value!r}")
        if self.timeout is not None and (
            isinstance(self.timeout, bool)
            or not isinstance(self.timeout, int | float)
            or self.timeout <= 0
        ):
            raise ValueError(
                f"timeout must be a positive number of seconds or None, got "
                f"{self.timeout!r}"
            )
        if self.retry is not None and not isinstance(self.retry, Retry):
            raise TypeError(
                f"retry takes a supervisor.Retry(...), got {self.retry!r}; "
                "e.g. retry=Retry(attempts=3, on=ConnectionError)"
            )

    def labels(self) -> dict[str, Any]:
        labels: dict[str, Any] = {}
        if self.name is not None:
            labels["nursery_name"] = self.name
        if self.timeout is not None:
            labels["nursery_timeout"] = self.timeout
        if self.retry is not None:
            retry = self.retry
            on = retry.on if isinstance(retry.on, tuple) else (retry.on,)
            labels["nursery_retry"] = {
                "attempts": retry.attempts,
                "on": [_exception_name(c) for c in on],
                "initial": retry.initial,
                "maximum": retry.maximum,
                "multiplier": retry.multiplier,
                "jitter": retry.jitter,
            }
        return labels


@attrs.define(eq=False)
class DurableQueue:
    """A named Redis queue of tasks, and the registry of what it may run.

    Create it at import time in a module both the app and the worker import,
    register task functions with :meth:`task`, open it in the app's lifespan
    (``async with queue:``) and send with :meth:`spawn`. ``idle_timeout`` is
    how long a task of a dead worker stays claimed before another worker
    takes it (live workers renew their claims every third of it);
    ``ttl`` is how long records and idempotency keys are kept, in seconds.
    """

    url: str
    name: str = "supervisor"
    idle_timeout: float = 30.0
    ttl: float = 7 * 24 * 3600.0
    _functions: dict[str, Callable[..., Any]] = attrs.field(factory=dict, init=False)
    _names: dict[Callable[..., Any], str] = attrs.field(factory=dict, init=False)
    _redis: Redis | None = attrs.field(default=None, init=False)
    _bridge: Bridge = attrs.field(factory=Bridge, init=False)
    _sha: str | None = attrs.field(default=None, init=False)

    # -- registry ----------------------------------------------------------

    def task(self, func: Any = None, /, *, name: str | None = None) -> Any:
        """Register ``func`` under ``name`` (default: its ``__qualname__``).

        Use as ``@queue.task`` or ``@queue.task(name="send_email")``. Workers
        find functions by this name only, never by importing what a message
        says, so a message cannot make a worker run arbitrary code.
        """

        def register(fn: Any) -> Any:
            if not callable(fn):
                raise TypeError(f"queue.task registers a function, got {fn!r}")
            key = name or fn.__qualname__
            if key in self._functions and self._functions[key] is not fn:
                raise ValueError(
                    f"a different function is already registered as {key!r} on "
                    f"queue {self.name!r}; pass name=... to tell them apart"
                )
            self._functions[key] = fn
            self._names[fn] = key
            return fn

        return register if func is None else register(func)

    @property
    def functions(self) -> Mapping[str, Callable[..., Any]]:
        return self._functions

    def _resolve(self, func: Any) -> tuple[str, Callable[..., Any]]:
        if isinstance(func, str):
            if func not in self._functions:
                raise LookupError(
                    f"no task named {func!r} on queue {self.name!r}; registered: "
                    f"{sorted(self._functions)!r}. Decorate it with @queue.task"
                )
            return func, self._functions[func]
        try:
            return self._names[func], func
        except (KeyError, TypeError):
            raise TypeError(
                f"{func!r} is not a task of queue {self.name!r}: durable tasks are "
                "sent by registered name; decorate the function with @queue.task"
            ) from None

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        """Connect (idempotent); call it in the app's lifespan startup."""
        if self._redis is not None:
            return
        self._bridge.open()
        self._redis = await self._bridge.run(self._connect)

    async def _connect(self) -> Redis:
        redis = Redis.from_url(self.url)
        await redis.ping()
        return redis

    async def aclose(self) -> None:
        redis, self._redis = self._redis, None
        if redis is not None:
            await self._bridge.run(redis.aclose)
        await self._bridge.close()

    async def __aenter__(self) -> DurableQueue:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _client(self) -> Redis:
        if self._redis is None:
            raise RuntimeError(
                f"DurableQueue {self.name!r} is not open; use `async with queue:` or "
                "`await queue.open()` in the app's lifespan before sending tasks"
            )
        return self._redis

    def record_key(self, task_id: str) -> str:
        return f"{self.name}:task:{task_id}"

    # -- sending -------------------------------------------------------------

    def options(
        self,
        *,
        name: str | None = None,
        task_id: str | None = None,
        timeout: float | None = None,
        retry: Retry | None = None,
        idempotency_key: str | None = None,
    ) -> DurableSpawner:
        """A sender whose tasks get these options (like ``Supervisor.options``)."""
        return DurableSpawner(
            self, DurableOptions(name, task_id, timeout, retry, idempotency_key)
        )

    async def spawn(self, func: Any, /, *args: Any, **kwargs: Any) -> DurableRecord:
        """Send ``func(*args, **kwargs)`` to the queue; returns once Redis has it."""
        return await self._send(DurableOptions(), func, args, kwargs)

    async def _send(
        self,
        options: DurableOptions,
        func: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> DurableRecord:
        task, fn = self._resolve(func)
        try:
            inspect.signature(fn).bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(
                f"arguments do not match durable task {task!r}: {exc}"
            ) from None
        except ValueError:  # no signature to check (some builtins)
            pass
        task_id = options.task_id or uuid.uuid4().hex
        labels = options.labels()
        context = _log_context()
        if context:
            labels["nursery_context"] = context
        message = encode_message(task_id, task, args, kwargs, labels)
        name = options.name or task
        redis = self._client()
        record = DurableRecord(task_id, name, TaskState.PENDING)
        return await self._bridge.run(
            lambda: self._enqueue(redis, record, message, options.idempotency_key)
        )

    async def _enqueue(
        self, redis: Redis, record: DurableRecord, message: bytes, key: str | None
    ) -> DurableRecord:
        now = time.time()
        keys = [self.record_key(record.task_id), self.name]
        if key is not None:
            keys.append(f"{self.name}:key:{key}")
        args = [record.task_id, record.name, now, int(self.ttl), message]
        argv: list[Any] = [*keys, *args, self.record_key("")]
        try:
            existing: Any = await redis.evalsha(
                await self._script_sha(redis), len(keys), *argv
            )
        except NoScriptError:  # Redis restarted and forgot the script
            self._sha = None
            existing = await redis.evalsha(
                await self._script_sha(redis), len(keys), *argv
            )
        if existing is not None:
            found = await self._read(redis, existing.decode())
            if found is not None:
                return found
        return attrs.evolve(record, created_at=_utc(now))

    async def _script_sha(self, redis: Redis) -> str:
        # Loaded once and called by its hash; a restarted Redis forgets it,
        # which _enqueue answers by loading it again.
        if self._sha is None:
            self._sha = str(await redis.script_load(_ENQUEUE))
        return self._sha

    # -- reading -------------------------------------------------------------

    async def get(self, task_id: str) -> DurableRecord | None:
        """The task's current record, from any process; ``None`` if unknown."""
        redis = self._client()
        return await self._bridge.run(lambda: self._read(redis, task_id))

    async def _read(self, redis: Redis, task_id: str) -> DurableRecord | None:
        raw: Any = await redis.hgetall(self.record_key(task_id))
        return DurableRecord.from_hash(task_id, raw) if raw else None

    async def wait(
        self, task_id: str, *, timeout: float | None = None, poll: float = 0.1
    ) -> DurableRecord:
        """Poll until the task is finished; ``TimeoutError`` after ``timeout``."""
        with anyio.fail_after(timeout):
            while True:
                record = await self.get(task_id)
                if record is None:
                    raise LookupError(
                        f"no durable task {task_id!r} on queue {self.name!r} (never "
                        "sent, or its record expired after ttl)"
                    )
                if record.state.is_terminal:
                    return record
                await anyio.sleep(poll)


@attrs.frozen
class DurableSpawner:
    """What :meth:`DurableQueue.options` returns: sends with fixed options."""

    queue: DurableQueue
    options: DurableOptions

    async def spawn(self, func: Any, /, *args: Any, **kwargs: Any) -> DurableRecord:
        return await self.queue._send(self.options, func, args, kwargs)
