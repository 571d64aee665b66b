"""``python -m supervisor.durable worker APP:QUEUE``: run a queue's tasks.

``APP:QUEUE`` names a :class:`~supervisor.durable.DurableQueue` as
``module:attribute`` (the module is imported, so its ``@queue.task``
functions are registered). The worker logs JSON lines (the format
``python -m supervisor failures`` reads) to stdout, or to ``--log-file``,
unless ``--no-configure-logging`` leaves structlog to the application.
SIGTERM or SIGINT: stop reading, drain for ``--shutdown-timeout`` seconds,
cancel what is left (it is delivered again to another worker), exit 0.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
from collections.abc import Sequence
from typing import Any

import anyio

from supervisor.logs import configure_logging

from ._queue import DurableQueue
from ._worker import Worker


def load(spec: str, what: str = "APP:QUEUE") -> Any:
    """Import ``module:attribute`` (from the current directory too)."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise SystemExit(f"expected {what} as module:attribute, got {spec!r}")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        found: Any = importlib.import_module(module)
        for part in attr.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise SystemExit(f"cannot load {what} {spec!r}: {exc}") from None
    return found


def load_queue(spec: str) -> DurableQueue:
    found = load(spec)
    if not isinstance(found, DurableQueue):
        raise SystemExit(
            f"{spec!r} is {found!r}, not a supervisor.durable.DurableQueue"
        )
    return found


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m supervisor.durable")
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("worker", help="run a DurableQueue's tasks")
    worker.add_argument("queue", metavar="APP:QUEUE")
    worker.add_argument("--concurrency", type=positive_int, default=10)
    worker.add_argument(
        "--max-deliveries",
        type=positive_int,
        default=5,
        help="fail a task delivered this many times without finishing",
    )
    worker.add_argument("--shutdown-timeout", type=float, default=10.0)
    worker.add_argument("--log-file", default=None, help="append JSON lines here")
    worker.add_argument("--log-level", default="INFO")
    worker.add_argument("--no-configure-logging", action="store_true")
    worker.add_argument(
        "--on-event",
        metavar="MODULE:HANDLER",
        help="the worker supervisor's on_event(event_name, data) handler",
    )
    return parser


async def serve(worker: Worker) -> None:
    async with anyio.create_task_group() as tg:

        async def on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
                async for _ in sigs:
                    worker.stop()
                    return

        tg.start_soon(on_signal)
        await worker.run()
        tg.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    queue = load_queue(args.queue)
    options: dict[str, Any] = {}
    if args.on_event:
        options["on_event"] = load(args.on_event, "--on-event")
    with contextlib.ExitStack() as files:  # the log file closes with the worker
        if not args.no_configure_logging:
            stream = None
            if args.log_file:
                stream = files.enter_context(open(args.log_file, "a", buffering=1))
            configure_logging(level=args.log_level, stream=stream)
        worker = Worker(
            queue,
            concurrency=args.concurrency,
            shutdown_timeout=args.shutdown_timeout,
            max_deliveries=args.max_deliveries,
            supervisor_options=options,
        )
        anyio.run(serve, worker, backend="asyncio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
