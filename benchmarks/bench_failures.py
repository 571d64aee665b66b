"""Throughput and memory of ``python -m supervisor failures`` on a big log.

Writes a synthetic JSON-lines log (default 1,000,000 lines: 5% ``task:failed``
lines with structured tracebacks, 90% other supervisor and application lines,
5% garbage) to a temporary file, then times the command's parsing function
(``supervisor._failures.scan_files``) over it and prints lines/s, MB/s and
the process's peak RSS.  The point is to show that the scan is streaming:
peak memory should not grow with ``--lines``.

``--bomb`` also times a hostile input: a 1 MB gzip that expands to 1 GiB of
zeros without a newline (issue 8), which must be streamed past in bounded
memory.  ``--dir DIR`` keeps the generated logs there and reuses them, so
that two versions of the code can be timed on the same bytes.

    python benchmarks/bench_failures.py [--lines N] [--gzip] [--bomb]
                                        [--repeat R] [--dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

_TASKS = ["send_email", "sync_cache", "render_report", "post_webhook", "resize_image"]
_ERRORS = ["ConnectionError", "TimeoutError", "ValueError", "KeyError"]


def _failure_traceback(error_type: str) -> list[dict[str, object]]:
    """A realistic ``dict_tracebacks`` value: a two-exception chain."""

    def frame(n: int) -> dict[str, object]:
        return {
            "filename": f"/srv/app/.venv/lib/python3.11/site-packages/lib{n}.py",
            "lineno": 100 + n,
            "name": f"function_{n}",
        }

    return [
        {
            "exc_type": error_type,
            "exc_value": "the remote end closed the connection",
            "exc_notes": [],
            "syntax_error": None,
            "is_cause": False,
            "frames": [frame(n) for n in range(6)],
            "is_group": False,
            "exceptions": [],
        },
        {
            "exc_type": "OSError",
            "exc_value": "[Errno 104] Connection reset by peer",
            "exc_notes": [],
            "syntax_error": None,
            "is_cause": True,
            "frames": [frame(n) for n in range(6, 10)],
            "is_group": False,
            "exceptions": [],
        },
    ]


def _line_makers(rng: random.Random) -> tuple[Callable[[int, str], str], ...]:
    def failure(n: int, stamp: str) -> str:
        error_type = rng.choice(_ERRORS)
        return json.dumps(
            {
                "task_id": f"{n:08x}-{rng.getrandbits(32):08x}",
                "task_name": rng.choice(_TASKS),
                "supervisor": "app",
                "state": "failed",
                "attempt": rng.randint(1, 3),
                "duration_s": round(rng.random() * 5, 4),
                "error": "the remote end closed the connection",
                "error_type": error_type,
                "event": "task:failed",
                "request_id": f"req-{rng.randrange(100_000):05d}",
                "level": "error",
                "timestamp": stamp,
                "exception": _failure_traceback(error_type),
            }
        )

    def other(n: int, stamp: str) -> str:
        kind = rng.random()
        if kind < 0.6:
            return json.dumps(
                {
                    "task_id": f"{n:08x}-{rng.getrandbits(32):08x}",
                    "task_name": rng.choice(_TASKS),
                    "supervisor": "app",
                    "state": "running" if kind < 0.3 else "succeeded",
                    "attempt": 1,
                    "event": "task:started" if kind < 0.3 else "task:succeeded",
                    "request_id": f"req-{rng.randrange(100_000):05d}",
                    "level": "debug",
                    "timestamp": stamp,
                }
            )
        return json.dumps(
            {
                "event": "request finished",
                "method": rng.choice(["GET", "POST"]),
                "path": f"/api/items/{rng.randrange(10_000)}",
                "status": rng.choice([200, 200, 200, 201, 404, 500]),
                "duration_ms": round(rng.random() * 300, 2),
                "request_id": f"req-{rng.randrange(100_000):05d}",
                "level": "info",
                "timestamp": stamp,
            }
        )

    def garbage(n: int, stamp: str) -> str:
        kind = n % 3
        if kind == 0:
            return f"INFO:     127.0.0.1:5{n % 10000:04d} - 'GET / HTTP/1.1' 200 OK"
        if kind == 1:
            return '{"event": "task:failed", "task_id": "cut-off-by-a-cra'
        return "[1, 2, 3]"

    return failure, other, garbage


def generate(path: Path, lines: int, *, seed: int = 1) -> None:
    """Write the synthetic log: 5% failures, 90% other lines, 5% garbage."""
    rng = random.Random(seed)
    failure, other, garbage = _line_makers(rng)
    start = datetime(2026, 11, 27, tzinfo=UTC)
    with path.open("w", encoding="utf-8", buffering=1 << 20) as out:
        for n in range(lines):
            stamp = (start + timedelta(milliseconds=n)).isoformat()
            stamp = stamp.replace("+00:00", "Z")
            pick = rng.random()
            make = failure if pick < 0.05 else garbage if pick >= 0.95 else other
            out.write(make(n, stamp) + "\n")


def _peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux and bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def main() -> None:
    """Generate, scan, report."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from supervisor._failures import scan_files

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of R runs")
    parser.add_argument("--gzip", action="store_true", help="also time a .gz copy")
    parser.add_argument(
        "--bomb", action="store_true", help="also time a 1 GiB gzip bomb"
    )
    parser.add_argument(
        "--dir", type=Path, help="keep the generated logs here and reuse them"
    )
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        if args.dir is None:
            where = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        else:
            where = args.dir
            where.mkdir(parents=True, exist_ok=True)
        path = where / f"app-{args.lines}.log"
        if not path.exists():
            started = time.perf_counter()
            generate(path, args.lines)
            print(
                f"generated {args.lines:,} lines, {path.stat().st_size / 1e6:,.1f} "
                f"MB in {time.perf_counter() - started:.1f} s"
            )
        size = path.stat().st_size
        print(f"peak RSS before scanning: {_peak_rss_mib():.1f} MiB")
        targets = [("plain", path, size)]
        if args.gzip:
            gz = where / f"app-{args.lines}.log.gz"
            if not gz.exists():
                with path.open("rb") as src, gzip.open(gz, "wb", 6) as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
            targets.append(("gzip", gz, size))
        if args.bomb:
            bomb = where / "bomb.gz"
            if not bomb.exists():
                member = gzip.compress(b"\0" * (1 << 20), 9)
                bomb.write_bytes(member * 1024)
            targets.append(("gzip bomb, 1 GiB without a newline", bomb, 1 << 30))
        for label, target, size in targets:
            best = float("inf")
            for _ in range(args.repeat):
                started = time.perf_counter()
                result = scan_files([os.fspath(target)])
                best = min(best, time.perf_counter() - started)
            skipped = sum(result.skipped.values())
            print(
                f"{label}: {result.lines:,} lines in {best:.3f} s (best of "
                f"{args.repeat}): {result.lines / best:,.0f} lines/s, "
                f"{size / best / 1e6:,.1f} MB/s (uncompressed); "
                f"{result.failures:,} failures in {len(result.groups)} groups, "
                f"{skipped:,} lines skipped"
            )
        print(f"peak RSS after scanning: {_peak_rss_mib():.1f} MiB")


if __name__ == "__main__":
    main()
