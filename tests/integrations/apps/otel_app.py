"""An ASGI app traced with OpenTelemetry, for the real-server test of supervisor.otel.

``POST /work`` continues the client's trace (its W3C ``traceparent``
header), opens a server span for the request, and spawns a task whose body
opens a span of its own; it answers ``{"task_id": ...}``. Every finished span
is written as one JSON line to the file named by ``OTEL_SPANS_FILE`` (a tiny
exporter, so the test reads what a collector would receive); the
supervisor's JSON log goes to ``EXAMPLE_LOG_FILE``. The tracer provider is
the global one, and the supervisor is instrumented with the one documented
call, before the server starts it. Runs under uvicorn and hypercorn (trio).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence

import anyio
from _reply import respond  # apps/ is on sys.path (uvicorn --app-dir, PYTHONPATH)
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

import supervisor.otel
from supervisor import Supervisor, SupervisorClosed
from supervisor.asgi import Receive, Scope, Send, SupervisorMiddleware
from supervisor.logs import configure_logging

_log_path = os.environ.get("EXAMPLE_LOG_FILE")
configure_logging(
    json=True,
    level="DEBUG",
    stream=open(_log_path, "a", buffering=1, encoding="utf-8") if _log_path else None,  # noqa: SIM115
)


class JsonLinesExporter(SpanExporter):
    """Appends each span as one JSON line: ids in hex, attributes, status."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            for span in spans:
                context = span.get_span_context()
                assert context is not None
                line = {
                    "name": span.name,
                    "trace_id": f"{context.trace_id:032x}",
                    "span_id": f"{context.span_id:016x}",
                    "parent_id": None
                    if span.parent is None
                    else f"{span.parent.span_id:016x}",
                    "kind": span.kind.name,
                    "attributes": dict(span.attributes or {}),
                    "status": span.status.status_code.name,
                }
                self._file.write(json.dumps(line) + "\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._file.close()


provider = TracerProvider()
provider.add_span_processor(
    SimpleSpanProcessor(JsonLinesExporter(os.environ["OTEL_SPANS_FILE"]))
)
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("otel_app")

sup = Supervisor(
    name="otel", shutdown_timeout=float(os.environ.get("EXAMPLE_SHUTDOWN_TIMEOUT", "5"))
)
supervisor.otel.instrument(sup)  # the global tracer and meter providers


async def render_report(n: int) -> int:
    with tracer.start_as_current_span("render"):
        await anyio.sleep(0.001)
    return n


async def inner_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/health":
        await respond(send, 200, {"status": "ok"})
        return
    if scope["method"] == "POST" and scope["path"] == "/work":
        headers = {
            k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]
        }
        parent = propagate.extract(headers)
        with tracer.start_as_current_span(
            "POST /work", context=parent, kind=trace.SpanKind.SERVER
        ):
            try:
                task = await sup.spawn(render_report, 1)
            except SupervisorClosed:
                await respond(send, 503, {"detail": "shutting down"})
                return
            await respond(send, 200, {"task_id": task.task_id})
        return
    await respond(send, 404, {"detail": "Not Found"})


app = SupervisorMiddleware(inner_app, sup)
