"""Scale and soak: a 100k-task storm loses nothing; 1M tasks keep memory flat.

Usage: python benchmarks/bench_soak.py [--backend asyncio trio] [--quick]

Two figures per backend, printed (not asserted as timed tests):

* **Storm.** 100,000 tasks spawned as fast as possible: 70% async tasks
  that succeed, 10% that fail, 10% that are cancelled (half before they
  start, half while running) and 10% sync tasks in worker threads. Reports
  the tasks lost (records not in a terminal state, or stats that do not add
  up; must be 0), the outcome counts against what was asked, and the time.
* **Soak.** 1,000,000 trivial tasks with ``history=1000``, spawned in
  batches of 10,000 with ``wait_idle()`` between them. Memory is sampled
  every 100,000 tasks with ``tracemalloc`` (Python allocations, traced for the
  whole run) and the process RSS; after warm-up the curve must be flat: the
  supervisor keeps live tasks plus ``history`` records, nothing more.

``--quick`` runs a 10k storm and a 100k soak (a smoke test of the script).
Exit status is 1 if a task was lost or memory grew past the warm-up level by
more than 10% of the warm-up level plus 1 MiB.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import configure_production_logging, fmt_num, markdown_table

from supervisor import Supervisor, TaskState

BATCH = 10_000


class StormError(Exception):
    """Raised on purpose by the failing tenth of the storm."""


async def _ok(i: int) -> int:
    await anyio.lowlevel.checkpoint()
    return i


async def _fail(i: int) -> None:
    await anyio.lowlevel.checkpoint()
    raise StormError(i)


def _sync(i: int) -> int:
    return i


async def _trivial() -> None:
    pass


async def storm(total: int) -> dict[str, Any]:
    """Spawn ``total`` mixed tasks; count what ended how, and what was lost."""
    began = time.perf_counter()
    async with Supervisor("storm", history=0, shutdown_timeout=60) as sup:
        records = []
        cancel_later = []
        for i in range(total):
            kind = i % 10
            if kind == 0:
                records.append(sup.spawn_nowait(_fail, i))
            elif kind == 1:
                task = sup.spawn_nowait(anyio.sleep_forever)
                records.append(task)
                if i % 20 == 1:
                    task.cancel("storm: before it starts")
                else:
                    cancel_later.append(task)
            elif kind == 2:
                records.append(sup.spawn_nowait(_sync, i))
            else:
                records.append(sup.spawn_nowait(_ok, i))
            if i % 1000 == 999:
                await anyio.lowlevel.checkpoint()  # let the storm run as it grows
                for task in cancel_later:
                    task.cancel("storm: while running")
                cancel_later.clear()
        for task in cancel_later:
            task.cancel("storm: while running")
        with anyio.fail_after(300):
            await sup.wait_idle()
        elapsed = time.perf_counter() - began
        stats = sup.stats()
    states = dict.fromkeys(TaskState, 0)
    for task in records:
        states[task.state] += 1
    live = states[TaskState.PENDING] + states[TaskState.RUNNING]
    unbalanced = stats.spawned - (
        stats.pending + stats.running + stats.succeeded + stats.failed + stats.cancelled
    )
    wanted = {
        "failed": total // 10,
        "cancelled": total // 10,
        "succeeded": total - 2 * (total // 10),
    }
    got = {
        "failed": states[TaskState.FAILED],
        "cancelled": states[TaskState.CANCELLED],
        "succeeded": states[TaskState.SUCCEEDED],
    }
    return {
        "total": total,
        "seconds": elapsed,
        "lost": live + abs(unbalanced) + abs(stats.spawned - total),
        "wrong_outcome": sum(abs(got[k] - wanted[k]) for k in wanted),
        "got": got,
        "stats_match": (stats.succeeded, stats.failed, stats.cancelled)
        == (got["succeeded"], got["failed"], got["cancelled"]),
    }


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def soak(total: int, every: int) -> dict[str, Any]:
    """Spawn ``total`` trivial tasks (history=1000); sample memory every ``every``."""
    samples: list[tuple[int, int, int]] = []
    tracemalloc.start()
    began = time.perf_counter()
    try:
        async with Supervisor("soak", history=1000, shutdown_timeout=60) as sup:
            done = 0
            while done < total:
                for _ in range(BATCH):
                    sup.spawn_nowait(_trivial)
                done += BATCH
                with anyio.fail_after(60):
                    await sup.wait_idle()
                if done % every == 0:
                    gc.collect()
                    current, _peak = tracemalloc.get_traced_memory()
                    samples.append((done, current, _rss_bytes()))
            records = len(sup.tasks)
            stats = sup.stats()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - began
    # Warm-up: the first fifth of the run (history fills, caches settle).
    warm = samples[max(0, len(samples) // 5 - 1)]
    after = samples[len(samples) // 5 :]
    growth_traced = max(s[1] for s in after) - warm[1]
    growth_rss = max(s[2] for s in after) - warm[2]
    limit = warm[1] * 0.10 + 2**20
    return {
        "total": total,
        "seconds": elapsed,
        "samples": samples,
        "records": records,
        "spawned": stats.spawned,
        "succeeded": stats.succeeded,
        "growth_traced": growth_traced,
        "growth_rss": growth_rss,
        "flat": growth_traced <= limit,
    }


def _mib(n: float) -> str:
    return f"{n / 2**20:,.2f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backend", nargs="+", default=["asyncio", "trio"], choices=["asyncio", "trio"]
    )
    parser.add_argument("--quick", action="store_true", help="10k storm, 100k soak")
    args = parser.parse_args(argv)
    configure_production_logging()
    storm_n = 10_000 if args.quick else 100_000
    soak_n, every = (100_000, 10_000) if args.quick else (1_000_000, 100_000)
    ok = True
    storm_rows, soak_rows, curves = [], [], []
    for backend in args.backend:
        s = anyio.run(storm, storm_n, backend=backend)
        storm_rows.append(
            [
                backend,
                fmt_num(s["total"]),
                str(s["lost"]),
                str(s["wrong_outcome"]),
                "yes" if s["stats_match"] else "NO",
                f"{s['seconds']:.2f}",
                fmt_num(s["total"] / s["seconds"]),
            ]
        )
        ok &= s["lost"] == 0 and s["wrong_outcome"] == 0 and s["stats_match"]
        m = anyio.run(soak, soak_n, every, backend=backend)
        soak_rows.append(
            [
                backend,
                fmt_num(m["total"]),
                str(m["records"]),
                f"{m['seconds']:.1f}",
                _mib(m["samples"][0][1]),
                _mib(m["samples"][-1][1]),
                _mib(m["growth_traced"]),
                _mib(m["growth_rss"]),
                "yes" if m["flat"] else "NO",
            ]
        )
        ok &= m["flat"] and m["spawned"] == m["succeeded"] == soak_n
        curves.append((backend, m["samples"]))

    print(f"## Storm: {fmt_num(storm_n)} tasks (10% fail, 10% cancelled, 10% sync)\n")
    print(
        markdown_table(
            [
                "backend",
                "tasks",
                "lost",
                "wrong outcome",
                "stats agree",
                "s",
                "tasks/s",
            ],
            storm_rows,
        )
    )
    print(f"\n## Soak: {fmt_num(soak_n)} trivial tasks, history=1000\n")
    print(
        markdown_table(
            [
                "backend",
                "tasks",
                "records kept",
                "s (traced)",
                "traced MiB first",
                "traced MiB last",
                "traced growth after warm-up MiB",
                "RSS growth after warm-up MiB",
                "flat",
            ],
            soak_rows,
        )
    )
    for backend, samples in curves:
        print(f"\n{backend} memory curve (tasks: traced MiB / RSS MiB):")
        print(
            "  "
            + ", ".join(f"{fmt_num(n)}: {_mib(t)}/{_mib(r)}" for n, t, r in samples)
        )
    if not ok:
        print("\nFAILED: a task was lost, an outcome was wrong, or memory grew")
        sys.exit(1)


if __name__ == "__main__":
    main()
