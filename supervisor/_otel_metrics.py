"""The OpenTelemetry instruments of :mod:`supervisor.otel`, one set per meter provider.

Apart from the spans because the two have different lifetimes: spans belong
to one supervisor's listener, instruments to a meter provider that several
supervisors (or one, instrumented twice) may share.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from ._version import __version__

if TYPE_CHECKING:
    from ._supervisor import Supervisor

__all__ = ["SCOPE", "Instruments", "Watched", "instruments_for"]

#: The instrumentation scope of the tracer and the meter.
SCOPE = "supervisor.otel"

# Seconds; the semantic conventions' request-duration buckets, stretched to
# the minutes that background work may take.
_DURATION_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0, 300.0, 900.0,
)  # fmt: skip


class Watched(Protocol):
    """What the instruments read of one instrumented supervisor."""

    @property
    def supervisor(self) -> Supervisor:
        """The supervisor whose stats() the gauges read."""

    def outcomes(self) -> dict[tuple[str, str], int]:
        """Terminal events so far, by (event name, task name)."""


class Instruments:
    """The instruments of one meter provider, shared by every instrumentation on it.

    OpenTelemetry hands out the first instrument registered under a name and
    ignores the callbacks of a second registration, so the observable ones
    read every watched supervisor through one callback each.
    """

    def __init__(self, meter: metrics.Meter) -> None:
        self._taps: weakref.WeakSet[Watched] = weakref.WeakSet()
        self._lock = threading.Lock()
        count = "{task}"
        for state in ("succeeded", "failed", "cancelled"):
            meter.create_observable_counter(
                f"supervisor.tasks.{state}",
                callbacks=[self._observe_outcome(f"task:{state}")],
                unit=count,
                description=f"Background tasks that ended {state}.",
            )
        self.duration = meter.create_histogram(
            "supervisor.task.duration",
            unit="s",
            description="From a task's first start to its end, retries included.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.queue_wait = meter.create_histogram(
            "supervisor.task.queue_wait",
            unit="s",
            description="From a task's spawn to its first start.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        meter.create_observable_counter(
            "supervisor.tasks.spawned",
            callbacks=[self._observe("spawned")],
            unit=count,
            description="Background tasks spawned since the supervisor started.",
        )
        for field in ("running", "pending"):
            meter.create_observable_up_down_counter(
                f"supervisor.tasks.{field}",
                callbacks=[self._observe(field)],
                unit=count,
                description=f"Background tasks {field} now.",
            )

    def watch(self, tap: Watched) -> None:
        with self._lock:
            self._taps.add(tap)

    def forget(self, tap: Watched) -> None:
        with self._lock:
            self._taps.discard(tap)

    def _observe(self, field: str) -> Any:
        def callback(options: CallbackOptions) -> Iterator[Observation]:
            with self._lock:
                supervisors = {tap.supervisor for tap in self._taps}
            # One point per supervisor name: two supervisors sharing a name
            # add up, as two processes of one app would.
            totals: dict[str, int] = {}
            for sup in supervisors:
                totals[sup.name] = totals.get(sup.name, 0) + getattr(sup.stats(), field)
            for name, value in totals.items():
                yield Observation(value, {"supervisor.name": name})

        return callback

    def _observe_outcome(self, event: str) -> Any:
        def callback(options: CallbackOptions) -> Iterator[Observation]:
            with self._lock:
                taps = list(self._taps)
            totals: dict[tuple[str, str], int] = {}
            for tap in taps:
                sup_name = tap.supervisor.name
                for (name, task_name), value in tap.outcomes().items():
                    if name == event:
                        key = (sup_name, task_name)
                        totals[key] = totals.get(key, 0) + value
            for (sup_name, task_name), value in totals.items():
                yield Observation(
                    value, {"supervisor.name": sup_name, "task.name": task_name}
                )

        return callback


_shared: weakref.WeakKeyDictionary[Any, Instruments] = weakref.WeakKeyDictionary()
_shared_lock = threading.Lock()


def instruments_for(meter_provider: MeterProvider | None) -> Instruments:
    provider = (
        metrics.get_meter_provider() if meter_provider is None else meter_provider
    )
    with _shared_lock:
        instruments = _shared.get(provider)
        if instruments is None:
            meter = metrics.get_meter(SCOPE, __version__, meter_provider=provider)
            instruments = _shared[provider] = Instruments(meter)
        return instruments
