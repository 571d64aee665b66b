"""supervisor.otel: one span per attempt under the spawner's span, and task metrics.

Every case runs on asyncio and trio with the SDK's in-memory exporter and
metric reader, through providers passed in (the global ones are never set).
The spans' parentage is the point: a task's span is a child of the span that
was current where it was spawned, and spans its body creates are children of
the task's span, also in a worker thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode

import supervisor.otel
from supervisor import Retry, Supervisor, TaskCancelled, TaskFailed


class Telemetry:
    """Local providers with in-memory exporters, and readers of what they got."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.tracer = self.tracer_provider.get_tracer("tests")

    def instrument(
        self, sup: Supervisor | None = None
    ) -> supervisor.otel.Instrumentation:
        return supervisor.otel.instrument(
            sup,
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
        )

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        spans = list(self.exporter.get_finished_spans())
        return [s for s in spans if name is None or s.name == name]

    def metrics(self) -> dict[str, list[Any]]:
        """Metric name -> its data points, at one collection."""
        found: dict[str, list[Any]] = {}
        data = self.reader.get_metrics_data()
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                if scope.scope.name != "supervisor.otel":
                    continue
                for metric in scope.metrics:
                    found[metric.name] = list(metric.data.data_points)
        return found

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    telemetry = Telemetry()
    yield telemetry
    telemetry.shutdown()


def _parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


async def ok() -> str:
    await anyio.lowlevel.checkpoint()
    return "ok"


async def fail() -> None:
    await anyio.lowlevel.checkpoint()
    raise ValueError("bad value")


async def test_task_span_is_a_child_of_the_spawners_span(otel: Telemetry) -> None:
    """The span of a task spawned under a span is that span's child, same trace."""
    async with Supervisor(name="app") as sup:
        otel.instrument(sup)
        with otel.tracer.start_as_current_span("request") as request:
            task = await sup.spawn(ok)
        assert await task.wait() == "ok"

    (span,) = otel.spans("ok")
    assert span.context.trace_id == request.get_span_context().trace_id
    assert _parent_id(span) == request.get_span_context().span_id
    assert dict(span.attributes or {}) == {
        "supervisor.name": "app",
        "task.id": task.task_id,
        "task.name": "ok",
        "task.attempt": 1,
        "task.state": "succeeded",
    }
    assert span.status.status_code is StatusCode.UNSET
    assert not span.events


async def test_spans_made_in_the_task_body_are_children(otel: Telemetry) -> None:
    """Spans the body makes, async or in a worker thread, have the task's as parent."""

    async def work() -> None:
        with otel.tracer.start_as_current_span("inner-async"):
            await anyio.lowlevel.checkpoint()

    def sync_work() -> None:
        with otel.tracer.start_as_current_span("inner-sync"):
            pass

    async with Supervisor(name="app") as sup:
        otel.instrument(sup)
        with otel.tracer.start_as_current_span("request"):
            first = await sup.spawn(work)
            second = await sup.spawn(sync_work)
        await first.wait()
        await second.wait()

    (task_span,) = otel.spans(
        "test_spans_made_in_the_task_body_are_children.<locals>.work"
    )
    (inner,) = otel.spans("inner-async")
    assert _parent_id(inner) == task_span.context.span_id
    (sync_span,) = otel.spans(
        "test_spans_made_in_the_task_body_are_children.<locals>.sync_work"
    )
    (inner_sync,) = otel.spans("inner-sync")
    assert _parent_id(inner_sync) == sync_span.context.span_id
    # After the task, the spawner's context is untouched: no span leaked into it.
    with otel.tracer.start_as_current_span("after") as after:
        pass
    assert after.parent is None


async def test_failure_records_the_exception(otel: Telemetry) -> None:
    """A failed task's span has status ERROR and the exception event."""
    async with Supervisor(name="app") as sup:
        otel.instrument(sup)
        task = await sup.spawn(fail)
        with pytest.raises(TaskFailed):
            await task.wait()

    (span,) = otel.spans("fail")
    assert span.parent is None  # spawned under no span: a root span
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ValueError: bad value"
    assert (span.attributes or {})["task.state"] == "failed"
    (event,) = span.events
    assert event.name == "exception"
    attributes = dict(event.attributes or {})
    assert attributes["exception.type"] == "ValueError"
    assert attributes["exception.message"] == "bad value"
    assert "in fail" in str(attributes["exception.stacktrace"])


@pytest.mark.virtual_time
async def test_retry_gives_one_span_per_attempt(
    otel: Telemetry, seconds: float
) -> None:
    """Each attempt is a sibling span; the backoff is the gap between them."""
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("refused")
        return "ok"

    retry = Retry(attempts=2, on=ConnectionError, initial=2 * seconds, jitter=0)
    async with Supervisor(name="app") as sup:
        otel.instrument(sup)
        with otel.tracer.start_as_current_span("request") as request:
            task = await sup.options(name="flaky", retry=retry).spawn(flaky)
        assert await task.wait() == "ok"

    first, second = sorted(otel.spans("flaky"), key=lambda s: s.start_time or 0)
    parent = request.get_span_context().span_id
    assert _parent_id(first) == _parent_id(second) == parent
    assert (first.attributes or {})["task.attempt"] == 1
    assert (first.attributes or {})["task.state"] == "pending"
    assert (first.attributes or {})["task.retry_in_s"] == pytest.approx(2 * seconds)
    assert first.status.status_code is StatusCode.ERROR
    assert [e.name for e in first.events] == ["exception"]
    assert (second.attributes or {})["task.attempt"] == 2
    assert (second.attributes or {})["task.state"] == "succeeded"
    assert second.status.status_code is StatusCode.UNSET
    assert first.end_time is not None
    assert second.start_time is not None
    # The second starts when the backoff is scheduled to end (wall clock).
    gap = (second.start_time - first.end_time) / 1e9
    assert gap == pytest.approx(2 * seconds, abs=0.05)


async def test_cancelled_task_span(otel: Telemetry) -> None:
    """A cancelled task's span says cancelled and why, with status UNSET."""
    started = anyio.Event()

    async def forever() -> None:
        started.set()
        await anyio.sleep_forever()

    async with Supervisor(name="app") as sup:
        otel.instrument(sup)
        task = await sup.spawn(forever)
        await started.wait()
        assert task.cancel("not needed")
        with pytest.raises(TaskCancelled):
            await task.wait()

    (span,) = otel.spans("test_cancelled_task_span.<locals>.forever")
    attributes = dict(span.attributes or {})
    assert attributes["task.state"] == "cancelled"
    assert attributes["task.cancel_reason"] == "not needed"
    assert span.status.status_code is StatusCode.UNSET


async def test_task_cancelled_before_it_started(otel: Telemetry) -> None:
    """A queued task cancelled before its start has one attempt-0 span, parented."""
    release = anyio.Event()

    async def hold() -> None:
        await release.wait()

    async with Supervisor(name="app", max_concurrency=1) as sup:
        otel.instrument(sup)
        with otel.tracer.start_as_current_span("request") as request:
            await sup.spawn(hold)
            queued = await sup.options(name="queued").spawn(ok)
        assert queued.cancel("dropped")
        with pytest.raises(TaskCancelled):
            await queued.wait()
        release.set()

    (span,) = otel.spans("queued")
    assert _parent_id(span) == request.get_span_context().span_id
    attributes = dict(span.attributes or {})
    assert attributes["task.attempt"] == 0
    assert attributes["task.cancel_reason"] == "dropped"
    assert span.start_time is not None
    assert span.end_time is not None
    assert span.start_time <= span.end_time


async def test_shutdown_cancellation_ends_the_span(otel: Telemetry) -> None:
    """A task cancelled at the shutdown deadline ends its span with reason shutdown."""
    started = anyio.Event()

    async def forever() -> None:
        started.set()
        await anyio.sleep_forever()

    sup = Supervisor(name="app", shutdown_timeout=0)
    otel.instrument(sup)  # before startup
    async with sup:
        await sup.options(name="forever").spawn(forever)
        await started.wait()

    (span,) = otel.spans("forever")
    assert (span.attributes or {})["task.cancel_reason"] == "shutdown"


async def test_uninstrument_stops_spans(otel: Telemetry) -> None:
    """After uninstrument() no span is made; open ones are ended then."""
    started = anyio.Event()
    release = anyio.Event()

    async def hold() -> None:
        started.set()
        await release.wait()

    async with Supervisor(name="app") as sup:
        with otel.instrument(sup) as instrumentation:
            assert instrumentation.active
            await (await sup.spawn(ok)).wait()
            held = await sup.options(name="held").spawn(hold)
            await started.wait()
        assert not instrumentation.active
        instrumentation.uninstrument()  # idempotent
        (open_span,) = otel.spans("held")
        assert (open_span.attributes or {})["task.state"] == "running"
        await (await sup.spawn(ok)).wait()
        release.set()
        await held.wait()

    assert len(otel.spans("ok")) == 1
    assert len(otel.spans("held")) == 1


async def test_instrument_every_supervisor(otel: Telemetry) -> None:
    """instrument() with no supervisor covers running ones and those started later."""
    async with Supervisor(name="early") as early:
        instrumentation = otel.instrument()
        try:
            async with Supervisor(name="late") as late:
                await (await late.options(name="late-task").spawn(ok)).wait()
                await (await early.options(name="early-task").spawn(ok)).wait()
            assert set(instrumentation.supervisors) == {early, late}
        finally:
            instrumentation.uninstrument()
        async with Supervisor(name="after") as after:
            await (await after.options(name="after-task").spawn(ok)).wait()
    assert {s.name for s in otel.spans()} == {"late-task", "early-task"}
    assert "every supervisor" in repr(instrumentation)


def _points(metrics: dict[str, list[Any]], name: str) -> dict[tuple[Any, ...], Any]:
    return {tuple(sorted((p.attributes or {}).items())): p for p in metrics[name]}


async def test_metrics(otel: Telemetry) -> None:
    """Counters per outcome and task name, gauges from stats(), two histograms."""
    started = anyio.Event()
    release = anyio.Event()

    blocking = anyio.Event()

    async def hold() -> None:
        started.set()
        await release.wait()

    async def block() -> None:
        blocking.set()
        await anyio.sleep_forever()

    async with Supervisor(name="app", max_concurrency=2) as sup:
        otel.instrument(sup)
        for _ in range(3):
            await (await sup.spawn(ok)).wait()
        with pytest.raises(TaskFailed):
            await (await sup.spawn(fail)).wait()
        held = await sup.options(name="hold").spawn(hold)
        await started.wait()
        blocker = await sup.options(name="blocker").spawn(block)
        queued = await sup.options(name="queued").spawn(ok)
        await blocking.wait()

        now = otel.metrics()
        app = (("supervisor.name", "app"),)
        assert _points(now, "supervisor.tasks.running")[app].value == 2
        assert _points(now, "supervisor.tasks.pending")[app].value == 1
        assert _points(now, "supervisor.tasks.spawned")[app].value == 7
        ok_labels = (("supervisor.name", "app"), ("task.name", "ok"))
        assert _points(now, "supervisor.tasks.succeeded")[ok_labels].value == 3
        fail_labels = (("supervisor.name", "app"), ("task.name", "fail"))
        assert _points(now, "supervisor.tasks.failed")[fail_labels].value == 1
        durations = _points(now, "supervisor.task.duration")
        assert durations[(*ok_labels, ("task.state", "succeeded"))].count == 3
        assert durations[(*fail_labels, ("task.state", "failed"))].count == 1
        waits = _points(now, "supervisor.task.queue_wait")
        assert waits[ok_labels].count == 3
        assert waits[ok_labels].min >= 0

        blocker.cancel("enough")
        release.set()
        await held.wait()
        await queued.wait()

    after = otel.metrics()
    blocker_labels = (("supervisor.name", "app"), ("task.name", "blocker"))
    assert _points(after, "supervisor.tasks.cancelled")[blocker_labels].value == 1
    assert _points(after, "supervisor.tasks.running")[app].value == 0
    assert _points(after, "supervisor.tasks.pending")[app].value == 0
    queued_labels = (("supervisor.name", "app"), ("task.name", "queued"))
    assert _points(after, "supervisor.tasks.succeeded")[queued_labels].value == 1
    # The queued task waited for a slot: its queue wait is in the histogram.
    (waited,) = [_points(after, "supervisor.task.queue_wait")[queued_labels]]
    assert waited.count == 1
    assert waited.sum > 0


async def test_two_supervisors_share_the_instruments(otel: Telemetry) -> None:
    """Two instrumentations on one meter provider both report their gauges."""
    async with Supervisor(name="a") as a, Supervisor(name="b") as b:
        otel.instrument(a)
        otel.instrument(b)
        await (await a.spawn(ok)).wait()
        await (await b.spawn(ok)).wait()
        await (await b.spawn(ok)).wait()
        spawned = _points(otel.metrics(), "supervisor.tasks.spawned")
    assert spawned[(("supervisor.name", "a"),)].value == 1
    assert spawned[(("supervisor.name", "b"),)].value == 2


async def test_service_restart_spans(otel: Telemetry) -> None:
    """A service's runs are sibling spans; a crash is recorded on its run's span."""
    runs = 0
    done = anyio.Event()

    async def consumer() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise ConnectionError("lost the broker")
        done.set()
        await anyio.sleep_forever()

    async with Supervisor(name="app", shutdown_timeout=0) as sup:
        otel.instrument(sup)
        await sup.start_service(consumer, name="consumer", restart="transient")
        await done.wait()

    first, second = sorted(otel.spans("consumer"), key=lambda s: s.start_time or 0)
    assert (first.attributes or {})["task.attempt"] == 1
    assert (first.attributes or {})["task.restart_reason"] == "crashed"
    assert first.status.status_code is StatusCode.ERROR
    assert (second.attributes or {})["task.attempt"] == 2
    assert (second.attributes or {})["task.state"] == "cancelled"


def test_instrument_refuses_what_is_not_a_supervisor() -> None:
    """A wrong argument is a TypeError that says what to pass."""
    with pytest.raises(TypeError, match="takes a Supervisor"):
        supervisor.otel.instrument("app")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"instrument\(sup\) returns them"):
        supervisor.otel.Instrumentation()
    with pytest.raises(TypeError, match="True or False"):
        supervisor.otel.instrument(new_trace="yes")  # type: ignore[arg-type]


async def test_abandoned_thread_span_ends_from_shutdown(otel: Telemetry) -> None:
    """A worker thread given up at the deadline: its span ends, from shutdown's task."""
    import threading

    from structlog.testing import capture_logs

    entered = threading.Event()
    release = threading.Event()

    def stuck() -> None:
        entered.set()
        release.wait(10)

    try:
        with capture_logs() as logs:
            async with Supervisor(name="app", shutdown_timeout=0) as sup:
                otel.instrument(sup)
                await sup.options(name="stuck").spawn(stuck)
                await anyio.to_thread.run_sync(entered.wait, 10)
    finally:
        release.set()

    (span,) = otel.spans("stuck")
    attributes = dict(span.attributes or {})
    assert attributes["task.state"] == "cancelled"
    assert attributes["task.abandoned"] is True
    assert not [e for e in logs if e["event"] == "supervisor:listener_failed"]


async def test_uninstrumented_supervisor_is_quiet_again(otel: Telemetry) -> None:
    """After uninstrument() the supervisor is back on its path that builds no events."""
    async with Supervisor(name="app") as sup:
        emitter = sup._runner.emitter  # type: ignore[union-attr]
        assert emitter.quiet
        instrumentation = otel.instrument(sup)
        assert not emitter.quiet
        instrumentation.uninstrument()
        assert emitter.quiet


def test_the_core_never_imports_opentelemetry() -> None:
    """Running a supervisor, with every integration imported, loads no opentelemetry."""
    import subprocess
    import sys

    code = (
        "import sys, anyio\n"
        "import supervisor, supervisor.asgi, supervisor.testing, supervisor.logs\n"
        "from supervisor import Supervisor\n"
        "async def main():\n"
        "    async with Supervisor(name='app') as sup:\n"
        "        await (await sup.spawn(anyio.sleep, 0)).wait()\n"
        "anyio.run(main)\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


async def test_new_trace_links_to_the_spawner(otel: Telemetry) -> None:
    """new_trace=True: the task's span is a root linked to the spawner's span."""

    async def work() -> None:
        with otel.tracer.start_as_current_span("inner"):
            await anyio.lowlevel.checkpoint()

    async with Supervisor(name="app") as sup:
        supervisor.otel.instrument(
            sup,
            tracer_provider=otel.tracer_provider,
            meter_provider=otel.meter_provider,
            new_trace=True,
        )
        with otel.tracer.start_as_current_span("request") as request:
            linked = await sup.options(name="linked").spawn(work)
        alone = await sup.options(name="alone").spawn(ok)
        await linked.wait()
        await alone.wait()

    (span,) = otel.spans("linked")
    (inner,) = otel.spans("inner")
    assert span.parent is None
    assert span.context.trace_id != request.get_span_context().trace_id
    (link,) = span.links
    assert link.context.span_id == request.get_span_context().span_id
    assert _parent_id(inner) == span.context.span_id
    (lone,) = otel.spans("alone")
    assert lone.parent is None
    assert not lone.links
