"""What supervisor.otel costs per task: off, uninstrumented again, no-op API, the SDK.

    python benchmarks/bench_otel.py [--n 10000] [--rounds 5] [--backend asyncio trio]

For each backend, a ``Supervisor(history=1000)`` (production-like structlog:
JSON, WARNING, ``/dev/null``) spawns N tasks with ``spawn_nowait`` whose body
is one checkpoint, then ``await sup.wait_idle()``. Modes:

* ``off``: never instrumented (``supervisor.otel`` is imported in the
  process, which installs nothing);
* ``uninstrumented``: ``instrument(sup)`` then ``uninstrument()`` before the
  spawns: the supervisor must be back on its quiet path (no events built);
* ``bare listener``: ``sup.add_listener(lambda event: None)``, no
  OpenTelemetry: what the supervisor itself pays to build and publish its
  events once anyone listens (the floor under the next two);
* ``no-op API``: instrumented with the API's ``NoOpTracerProvider`` and
  ``NoOpMeterProvider``: the listener's own cost, no recording;
* ``SDK``: an SDK ``TracerProvider`` with a ``BatchSpanProcessor`` (queue
  sized for N, so none is dropped) feeding an exporter that discards, and an
  SDK ``MeterProvider`` with an ``InMemoryMetricReader``: what production
  pays, minus the network.

Columns, medians over rounds that alternate the modes (A B C D E, A B C D E...),
each run in a fresh event loop after one discarded warm-up per mode:
**spawn µs/task** (the ``spawn_nowait`` loop alone: no body runs while it
spins, and the instrumentation works in the task, not at spawn) and **total
µs/task** (first spawn to ``wait_idle()`` returning, over N), and the ratio
of the total to ``off``.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from importlib import metadata
from typing import Any

import anyio
from _common import configure_production_logging, fmt_num, fmt_ratio, markdown_table
from _common import median as _median
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

import supervisor.otel
from supervisor import Supervisor

Body = Callable[[], Coroutine[Any, Any, None]]
MODES = ("off", "uninstrumented", "bare listener", "no-op API", "SDK")


class DiscardExporter(SpanExporter):
    """Takes the batches and drops them: the SDK's cost without the network."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS


def _ignore(event: object) -> None:
    del event


def _providers(n: int) -> dict[str, tuple[Any, Any]]:
    sdk_tracer = TracerProvider()
    sdk_tracer.add_span_processor(
        BatchSpanProcessor(DiscardExporter(), max_queue_size=2 * n + 2048)
    )
    sdk_meter = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return {
        "uninstrumented": (sdk_tracer, sdk_meter),
        "no-op API": (trace.NoOpTracerProvider(), metrics.NoOpMeterProvider()),
        "SDK": (sdk_tracer, sdk_meter),
    }


def _body(backend: str) -> Body:
    if backend == "trio":
        import trio

        async def trio_body() -> None:
            await trio.lowlevel.checkpoint()

        return trio_body

    async def asyncio_body() -> None:
        await asyncio.sleep(0)

    return asyncio_body


async def _run(
    mode: str, n: int, body: Body, providers: dict[str, tuple[Any, Any]]
) -> tuple[float, float]:
    async with Supervisor(name="bench", history=1000) as sup:
        instrumentation = None
        if mode == "bare listener":
            sup.add_listener(_ignore)
        elif mode != "off":
            tracer_provider, meter_provider = providers[mode]
            instrumentation = supervisor.otel.instrument(
                sup, tracer_provider=tracer_provider, meter_provider=meter_provider
            )
            if mode == "uninstrumented":
                instrumentation.uninstrument()
        spawn = sup.spawn_nowait
        began = time.perf_counter()
        for _ in range(n):
            spawn(body)
        spawned = time.perf_counter()
        await sup.wait_idle()
        done = time.perf_counter()
        if instrumentation is not None:
            instrumentation.uninstrument()
    return (spawned - began) / n * 1e6, (done - began) / n * 1e6


def bench(backend: str, n: int, rounds: int) -> list[list[str]]:
    providers = _providers(n)
    body = _body(backend)
    samples: dict[str, tuple[list[float], list[float]]] = {m: ([], []) for m in MODES}
    for round_number in range(rounds + 1):  # round 0: the warm-up, discarded
        for mode in MODES:
            spawn_us, total_us = anyio.run(
                _run, mode, n, body, providers, backend=backend
            )
            if round_number:
                samples[mode][0].append(spawn_us)
                samples[mode][1].append(total_us)
    used = {id(p): p for pair in providers.values() for p in pair}
    for provider in used.values():
        if isinstance(provider, TracerProvider | MeterProvider):
            provider.shutdown()
    reference = _median(samples["off"][1])
    rows = []
    for mode in MODES:
        spawn_us, total_us = (_median(values) for values in samples[mode])
        rows.append(
            [
                f"{backend}: {mode}",
                fmt_num(spawn_us, 2),
                fmt_num(total_us, 2),
                fmt_ratio(total_us, reference),
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="tasks per run")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds")
    parser.add_argument(
        "--backend", nargs="+", default=["asyncio", "trio"], choices=["asyncio", "trio"]
    )
    parser.add_argument(
        "--quick", action="store_true", help="N=2,000 and 2 rounds (a smoke test)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.rounds = 2_000, 2
    configure_production_logging()
    print(
        f"Python {platform.python_version()}, anyio {metadata.version('anyio')}, "
        f"opentelemetry-sdk {metadata.version('opentelemetry-sdk')}; "
        f"N={args.n:,}, {args.rounds} rounds, medians\n"
    )
    rows = []
    for backend in args.backend:
        rows.extend(bench(backend, args.n, args.rounds))
    print(
        markdown_table(["mode", "spawn µs/task", "total µs/task", "total vs off"], rows)
    )


if __name__ == "__main__":
    sys.exit(main())
