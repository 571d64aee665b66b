"""OpenTelemetry for background tasks: a span per task attempt, and task metrics.

One call turns it on::

    import supervisor.otel

    instrumentation = supervisor.otel.instrument(sup)   # or instrument() for all
    ...
    instrumentation.uninstrument()

It needs the ``otel`` extra (``pip install -e '.[otel]'`` from a checkout, the
OpenTelemetry API only); the application brings the SDK and its exporters,
as usual with OpenTelemetry instrumentation. The core never imports this
module, and a supervisor nobody instruments pays nothing for it: with no
listener attached the runner does not even build its events.

How it works, and why it is correct on both backends: the instrumentation is
one more listener of the supervisor's :class:`~supervisor.TaskEvent` records
(:meth:`~supervisor.Supervisor.add_listener`), and listeners are called
synchronously inside the task whose transition they report. A task runs in a
copy of its spawner's ``contextvars`` context, so at ``task:started`` the
current OpenTelemetry context is the spawner's: the request's span, when a
request handler spawned the task. The attempt's span is started there, as a
child of that span, and attached to the task's own context, so spans that
the task body creates (an HTTP client's, a database driver's) are children of
the attempt's span. The terminal event detaches and ends it, in the same
context. With ``instrument(..., new_trace=True)`` the attempt's span is a
root instead, linked to the spawner's span.

Spans, one per attempt, named after the task (``SpanKind.INTERNAL``):

* attributes ``supervisor.name``, ``task.id``, ``task.name``,
  ``task.attempt`` (from 1), and at the end ``task.state`` (``succeeded``,
  ``failed``, ``cancelled``; ``pending`` for an attempt that is retried);
* a failure (``task:failed``) or a failed attempt that is retried
  (``task:retrying``, ``service:restarting`` after a crash) records the
  exception (the semantic conventions' ``exception`` event) and sets the
  status to ERROR; success and cancellation leave it UNSET, as the
  OpenTelemetry guidance asks of instrumentation libraries. A cancellation
  adds ``task.cancel_reason`` (and ``task.abandoned`` for a worker thread
  given up at the shutdown deadline);
* retries: ``task:retrying`` ends the failed attempt's span and starts the
  next attempt's at once, with ``start_time`` set to when the backoff ends
  (now plus ``retry_in_s``): the supervisor announces no event when the next
  attempt begins, and the span must exist before it does, so that the body's
  spans have a parent. The backoff is therefore the gap between two sibling
  spans. A task cancelled during its backoff ends that span at its start
  (zero length, ``task.state = cancelled``). Services do the same on
  ``service:restarting`` (after ``backoff_s``), and ``service:gave_up`` is
  an event on the last run's span;
* a task cancelled before it ever started (``attempt=0``) gets one span from
  its spawn to its cancellation, so a trace still shows work that was queued
  and dropped.

Metrics (instrumentation scope ``supervisor.otel``; every point carries
``supervisor.name``, the per-task ones also ``task.name``):

* ``supervisor.tasks.spawned`` (observable counter): tasks spawned since
  startup, read from :meth:`~supervisor.Supervisor.stats` at each collection,
  so it counts tasks still waiting in the queue too (no event is emitted at
  spawn time) and is exact. It has no ``task.name``;
* ``supervisor.tasks.succeeded``, ``.failed``, ``.cancelled`` (observable
  counters, with ``task.name``): the listener counts terminal events in a
  dict and each collection reads it, so a task costs a dict update rather
  than an SDK measurement (measured: the SDK's counter ``add`` was a third
  of the metrics' cost per task);
* ``supervisor.tasks.running``, ``.pending`` (observable up-down counters,
  OpenTelemetry's instrument for a count that goes up and down, like
  ``http.server.active_requests``): from ``stats()`` at each collection;
* ``supervisor.task.duration`` (histogram, seconds): from a task's first
  start to its end (retries included), with ``task.name`` and ``task.state``;
* ``supervisor.task.queue_wait`` (histogram, seconds): from spawn to the
  first start (a ``max_concurrency`` slot, a worker thread, the scheduler).

``task.name`` is a function's qualified name unless the spawn chose one;
keep chosen names free of ids, or every task becomes its own time series.

Instruments are shared by every instrumentation that uses the same meter
provider (OpenTelemetry returns the first instrument of a name and drops the
callbacks of a second one), so two supervisors, or a supervisor instrumented
again, report side by side.
"""

from __future__ import annotations

import threading
import time
import weakref
from contextvars import Token
from types import TracebackType
from typing import Any

import attrs
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import Span, Status, StatusCode, TracerProvider

from . import _registry
from ._events import TaskEvent, _describe
from ._otel_metrics import SCOPE, Instruments, instruments_for
from ._records import made_here
from ._supervisor import Supervisor
from ._version import __version__

__all__ = ["Instrumentation", "instrument"]


def instrument(
    supervisor: Supervisor | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    new_trace: bool = False,
) -> Instrumentation:
    """Trace and measure the background tasks of ``supervisor`` (or of all of them).

    Call it before or after :meth:`~supervisor.Supervisor.startup`: before,
    every task is seen; after, tasks already running when it is called get
    no span (their parent context is gone), only their outcome counted.
    With no ``supervisor``, every supervisor running now and every one that
    starts later is instrumented, until :meth:`Instrumentation.uninstrument`.

    ``tracer_provider`` and ``meter_provider`` default to the global ones
    (:func:`opentelemetry.trace.set_tracer_provider`), resolved lazily, so
    this may run before the application configures the SDK.

    ``new_trace=True`` starts each task's spans in a trace of their own,
    linked to the spawner's span instead of children of it: for work that
    outlives its request by far (hours-long jobs), where a request trace
    that never ends is a nuisance in the trace viewer.

    Call it (and ``uninstrument()``) on the supervisor's event loop thread.
    """
    if supervisor is not None and not isinstance(supervisor, Supervisor):
        raise TypeError(
            f"instrument() takes a Supervisor (or nothing, for every supervisor), "
            f"got {supervisor!r}"
        )
    if not isinstance(new_trace, bool):
        raise TypeError(
            f"instrument(new_trace=...) takes True or False, got {new_trace!r}"
        )
    tracer = trace.get_tracer(SCOPE, __version__, tracer_provider=tracer_provider)
    instruments = instruments_for(meter_provider)
    instrumentation = Instrumentation._create(
        tracer, instruments, every=supervisor is None, new_trace=new_trace
    )
    if supervisor is None:
        _registry.on_register.append(instrumentation._tap)
        for running in _registry.running():
            instrumentation._tap(running)
    else:
        instrumentation._tap(supervisor)
    return instrumentation


@made_here("supervisor.otel.instrument(sup) returns them")
@attrs.define(eq=False, repr=False)
class Instrumentation:
    """What :func:`instrument` returns: the handle that turns it off again.

    :meth:`uninstrument` removes the listeners, ends the spans of attempts
    still running (with ``task.state = running``: their outcome is no longer
    watched), and stops reporting the supervisors' gauges. Also a context
    manager that uninstruments on exit.
    """

    _tracer: trace.Tracer
    _instruments: Instruments
    _every: bool
    _new_trace: bool
    # Weak: a tap lives as long as its supervisor (whose emitter holds it),
    # so instrument() for every supervisor keeps none of them alive.
    _taps: weakref.WeakSet[_Tap] = attrs.field(factory=weakref.WeakSet)
    _lock: threading.Lock = attrs.field(factory=threading.Lock)
    _active: bool = True

    @classmethod
    def _create(cls, *args: Any, **kwargs: Any) -> Instrumentation:
        raise NotImplementedError  # replaced by made_here

    @property
    def active(self) -> bool:
        """True until :meth:`uninstrument` is called."""
        return self._active

    @property
    def supervisors(self) -> tuple[Supervisor, ...]:
        """The supervisors instrumented so far (for ``instrument()``: every one)."""
        with self._lock:
            return tuple(tap.supervisor for tap in self._taps)

    def uninstrument(self) -> None:
        """Stop tracing and measuring; idempotent."""
        with self._lock:
            if not self._active:
                return
            self._active = False
            taps, self._taps = list(self._taps), weakref.WeakSet()
        if self._tap in _registry.on_register:
            _registry.on_register.remove(self._tap)
        for tap in taps:
            tap.supervisor.remove_listener(tap)
            self._instruments.forget(tap)
            tap.close()

    def _tap(self, supervisor: Supervisor) -> None:
        """Start listening to ``supervisor`` (once)."""
        with self._lock:
            if not self._active or any(t.supervisor is supervisor for t in self._taps):
                return
            tap = _Tap(supervisor, self._tracer, self._instruments, self._new_trace)
            self._taps.add(tap)
        self._instruments.watch(tap)
        supervisor.add_listener(tap)

    def __enter__(self) -> Instrumentation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.uninstrument()

    def __repr__(self) -> str:
        what = "every supervisor" if self._every else repr(self.supervisors)
        state = "active" if self._active else "uninstrumented"
        return f"<supervisor.otel.Instrumentation {what} {state}>"


# -- spans ---------------------------------------------------------------------


@attrs.define(eq=False)
class _Attempt:
    """The span of one attempt, the context token that made it current, its parent."""

    span: Span
    token: Token[otel_context.Context] | None
    parent: otel_context.Context
    start_ns: int


_TERMINAL = frozenset({"task:succeeded", "task:failed", "task:cancelled"})


@attrs.define(eq=False, repr=False)
class _Tap:
    """The listener on one supervisor: its tasks' open spans, and its metrics."""

    supervisor: Supervisor
    _tracer: trace.Tracer
    _instruments: Instruments
    _new_trace: bool
    # Task id -> its current attempt; popped at the terminal event.
    _attempts: dict[str, _Attempt] = attrs.field(factory=dict)
    # (terminal event, task name) -> tasks so far: the outcome counters read
    # these at collection, which costs a task a dict update instead of an
    # SDK measurement (the lock: collection runs in the reader's thread).
    _outcomes: dict[tuple[str, str], int] = attrs.field(factory=dict)
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    def outcomes(self) -> dict[tuple[str, str], int]:
        """A copy of the outcome counts, for the observable counters."""
        with self._lock:
            return dict(self._outcomes)

    def __call__(self, event: TaskEvent) -> None:
        name = event.event
        if name == "task:started":
            self._started(event)
        elif name in _TERMINAL:
            self._ended(event)
        elif name == "task:retrying":
            self._next_attempt(event, event.details.get("retry_in_s", 0.0))
        elif name == "service:restarting":
            self._next_attempt(event, event.details.get("backoff_s", 0.0))
        elif name == "service:gave_up":
            attempt = self._attempts.get(event.task_id)
            if attempt is not None:
                attempt.span.add_event("service.gave_up", _flat(event.details))

    def _started(self, event: TaskEvent) -> None:
        record = self.supervisor.get(event.task_id)
        if record is not None and record.started_at is not None:
            waited = (record.started_at - record.created_at).total_seconds()
            self._instruments.queue_wait.record(max(waited, 0.0), _labels(event))
        self._open(event, event.attempt, otel_context.get_current(), None)

    def _open(
        self,
        event: TaskEvent,
        attempt: int,
        parent: otel_context.Context,
        start_ns: int | None,
    ) -> None:
        span = self._start_span(event, attempt, parent, start_ns)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        self._attempts[event.task_id] = _Attempt(
            span, token, parent, time.time_ns() if start_ns is None else start_ns
        )

    def _start_span(
        self,
        event: TaskEvent,
        attempt: int,
        parent: otel_context.Context,
        start_ns: int | None,
    ) -> Span:
        links = None
        if self._new_trace:
            # A root span (the rest of the context, baggage, is kept) that
            # links to the spawner's span, if there was one.
            spawner = trace.get_current_span(parent).get_span_context()
            links = [trace.Link(spawner)] if spawner.is_valid else None
            parent = trace.set_span_in_context(trace.INVALID_SPAN, parent)
        return self._tracer.start_span(
            event.task_name,
            context=parent,
            attributes={
                "supervisor.name": event.supervisor,
                "task.id": event.task_id,
                "task.name": event.task_name,
                "task.attempt": attempt,
            },
            links=links,
            start_time=start_ns,
        )

    def _next_attempt(self, event: TaskEvent, delay: object) -> None:
        attempt = self._attempts.pop(event.task_id, None)
        if attempt is None:  # started before the instrumentation
            return
        self._close(attempt, event)
        seconds = float(delay) if isinstance(delay, int | float) else 0.0
        start_ns = time.time_ns() + int(seconds * 1e9)
        self._open(event, event.attempt + 1, attempt.parent, start_ns)

    def _ended(self, event: TaskEvent) -> None:
        instruments = self._instruments
        labels = _labels(event)
        key = (event.event, event.task_name)
        with self._lock:
            self._outcomes[key] = self._outcomes.get(key, 0) + 1
        if event.duration_s is not None:
            instruments.duration.record(
                event.duration_s, {**labels, "task.state": event.state.value}
            )
        attempt = self._attempts.pop(event.task_id, None)
        if attempt is None:
            if event.attempt != 0:  # started before the instrumentation
                return
            # Cancelled before it ever started: one span for its time queued.
            record = self.supervisor.get(event.task_id)
            start_ns = None
            if record is not None:
                start_ns = int(record.created_at.timestamp() * 1e9)
            parent = otel_context.get_current()
            span = self._start_span(event, 0, parent, start_ns)
            attempt = _Attempt(span, None, parent, start_ns or time.time_ns())
        self._close(attempt, event)

    def _close(self, attempt: _Attempt, event: TaskEvent) -> None:
        span = attempt.span
        span.set_attribute("task.state", event.state.value)
        if event.error is not None:
            span.record_exception(event.error)
            span.set_status(
                Status(
                    StatusCode.ERROR,
                    f"{type(event.error).__name__}: {_describe(event.error)}",
                )
            )
        reason = event.details.get("reason")
        if event.event == "task:cancelled" and isinstance(reason, str):
            span.set_attribute("task.cancel_reason", reason)
            if event.details.get("abandoned"):
                span.set_attribute("task.abandoned", True)
        elif event.event == "task:retrying":
            retry_in = event.details.get("retry_in_s")
            if isinstance(retry_in, int | float):
                span.set_attribute("task.retry_in_s", float(retry_in))
        elif event.event == "service:restarting" and isinstance(reason, str):
            span.set_attribute("task.restart_reason", reason)
        now = time.time_ns()
        # An attempt whose backoff had not ended yet never ran: zero length.
        span.end(end_time=max(now, attempt.start_ns))
        # Detach only in the task's own context (where our span is current):
        # shutdown reports an abandoned task from another task's context.
        if attempt.token is not None and trace.get_current_span() is span:
            otel_context.detach(attempt.token)

    def close(self) -> None:
        """End the spans still open (uninstrumented while their tasks ran)."""
        attempts, self._attempts = self._attempts, {}
        for task_id, attempt in attempts.items():
            record = self.supervisor.get(task_id)
            state = "running" if record is None else record.state.value
            attempt.span.set_attribute("task.state", state)
            attempt.span.end(end_time=max(time.time_ns(), attempt.start_ns))

    def __repr__(self) -> str:
        return f"<supervisor.otel listener of {self.supervisor!r}>"


def _labels(event: TaskEvent) -> dict[str, str]:
    return {"supervisor.name": event.supervisor, "task.name": event.task_name}


def _flat(details: Any) -> dict[str, str | int | float | bool]:
    """Event details that OpenTelemetry accepts as attributes (scalars only)."""
    return {
        f"service.{key}": value
        for key, value in details.items()
        if isinstance(value, str | int | float | bool)
    }
