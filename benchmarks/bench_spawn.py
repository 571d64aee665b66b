"""Spawn cost, throughput and memory: the Supervisor against native nurseries and peers.

    python benchmarks/bench_spawn.py [--n 10000 100000] [--rounds 5]
                                     [--backend asyncio trio] [--quick] [--profile]

For each backend and each N, every contender spawns N tasks whose body is one
checkpoint (``asyncio.sleep(0)`` / ``trio.lowlevel.checkpoint()``, the same for every
contender on a backend) and the table shows, as medians over the rounds:

* spawn µs/task: the spawn loop alone (no body runs while it spins: none of
  the spawn calls yields), divided by N;
* throughput: N / (first spawn → the contender's own "all done" returns);
* peak KiB per live task: a separate run under ``tracemalloc`` whose bodies
  wait on one event, so all N are alive at once: (peak - before) / N;
* retained KiB: another traced run that spawns the N tasks in waves of
  1,000 (so every set and dict peaks at the same size whatever N is), then,
  with the contender still open (a supervisor is app-scoped: it stays open),
  ``gc.collect()`` and traced memory minus before. For the Supervisor
  (``history=1000``) it must not grow with N; QakeAPI keeps every task
  forever, so its figure does.

Contenders run round-robin (round 1: A, B, C...; round 2: A, B, C...) so
that drift on a shared machine hits each alike, each in a fresh event loop
(``anyio.run(..., backend=...)``), after one discarded warm-up run each.
The Supervisor runs with a production-like structlog configuration (JSON,
filtered at WARNING, to /dev/null) and no event sink. A last section compares
sync tasks: ``sup.spawn_nowait(sync_fn)`` against ``anyio.to_thread.run_sync``
spawned into the native nursery.

``--profile`` also runs the Supervisor at the largest N under cProfile on
each backend and prints the functions that cost the most per task.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import math
import os
import platform
import pstats
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Protocol

import anyio
import anyio.lowlevel
import anyio.to_thread
from _common import (
    configure_production_logging,
    fmt_num,
    fmt_ratio,
    markdown_table,
    median,
    verdict,
)

from supervisor import Supervisor

Body = Callable[[], Coroutine[Any, Any, None]]
perf = time.perf_counter
#: The clock of the spawn/throughput runs (``--clock``): wall time by
#: default; ``process_time`` (CPU) on a shared machine, where it leaves out
#: the time other processes took the core (those runs are single-threaded).
clock = time.perf_counter

#: Supervisor history, as in the issue: the default, kept explicit.
HISTORY = 1000
#: Sync tasks per run in the thread section (threads are slow: keep it short).
SYNC_TASKS = 2000
#: Tasks per wave in the retained-memory run (the live high-water for every N).
WAVE = 1000
#: Bound on the checkpoints a memory run waits for every body to start or end.
MAX_SETTLE_CHECKPOINTS = 10_000


# -- contenders ------------------------------------------------------------


class Group(Protocol):
    """One contender's open task group, seen by the measuring code."""

    async def spawn_many(self, body: Body, n: int) -> None:
        """Spawn ``body`` n times in a tight loop that never yields."""

    async def join(self) -> None:
        """Wait for every spawned body (a no-op where closing the group waits)."""


@dataclass(frozen=True)
class Contender:
    """A way to run background tasks, on the backends where it exists."""

    key: str
    label: str
    backends: tuple[str, ...]
    open: Callable[[], contextlib.AbstractAsyncContextManager[Group]]
    #: Native nurseries have no "wait for children" but their own exit, so
    #: their throughput clock stops after the ``async with`` block.
    joins_on_exit: bool = False
    #: False where the task records are another contender's (same memory).
    memory: bool = True


class _Spawner:
    """Holds the bound spawn function; ``join`` is the contender's own wait."""

    def __init__(
        self,
        spawn: Callable[..., Any],
        join: Callable[[], Awaitable[None]] | None = None,
        *,
        awaits: bool = False,
        calls_body: bool = False,
    ) -> None:
        self._spawn = spawn
        self._join = join
        self._awaits = awaits
        self._calls_body = calls_body

    async def spawn_many(self, body: Body, n: int) -> None:
        # Four loops rather than one with branches: the loop is what is timed.
        spawn = self._spawn
        if self._awaits and self._calls_body:
            for _ in range(n):
                await spawn(body())
        elif self._awaits:
            for _ in range(n):
                await spawn(body)
        elif self._calls_body:
            for _ in range(n):
                spawn(body())
        else:
            for _ in range(n):
                spawn(body)

    async def join(self) -> None:
        if self._join is not None:
            await self._join()


@contextlib.asynccontextmanager
async def _open_asyncio_taskgroup() -> AsyncIterator[Group]:
    async with asyncio.TaskGroup() as tg:
        yield _Spawner(tg.create_task, calls_body=True)


@contextlib.asynccontextmanager
async def _open_trio_nursery() -> AsyncIterator[Group]:
    import trio

    async with trio.open_nursery() as nursery:
        yield _Spawner(nursery.start_soon)


@contextlib.asynccontextmanager
async def _open_anyio_taskgroup() -> AsyncIterator[Group]:
    async with anyio.create_task_group() as tg:
        yield _Spawner(tg.start_soon)


@contextlib.asynccontextmanager
async def _open_aiojobs() -> AsyncIterator[Group]:
    import aiojobs

    scheduler = aiojobs.Scheduler(limit=None)

    async def join() -> None:
        # Finished jobs leave the scheduler. Polling that is aiojobs' fastest
        # wait by far: wait_and_close() gathers a timeout-wrapped coroutine
        # per job and runs at a third of the throughput (15k vs 42k tasks/s
        # at N=100k here), which would make it an easy target.
        while len(scheduler):  # noqa: ASYNC110 - aiojobs has no "empty" event
            await asyncio.sleep(0)

    try:
        yield _Spawner(scheduler.spawn, join, awaits=True, calls_body=True)
    finally:
        await scheduler.close()


@contextlib.asynccontextmanager
async def _open_qakeapi() -> AsyncIterator[Group]:
    from qakeapi.core.background import BackgroundTaskManager

    manager = BackgroundTaskManager()  # type: ignore[no-untyped-call]

    async def join() -> None:
        # QakeAPI has no "wait for all"; a task leaves _running_tasks when its
        # body ends, and polling that is cheaper than gathering the tasks.
        while manager._running_tasks:  # noqa: ASYNC110 - no "empty" event either
            await asyncio.sleep(0)

    yield _Spawner(manager.add_task, join, awaits=True)


@contextlib.asynccontextmanager
async def _open_supervisor() -> AsyncIterator[Group]:
    async with Supervisor(name="bench", history=HISTORY) as sup:
        yield _Spawner(sup.spawn_nowait, sup.wait_idle)


@contextlib.asynccontextmanager
async def _open_supervisor_await() -> AsyncIterator[Group]:
    async with Supervisor(name="bench", history=HISTORY) as sup:
        yield _Spawner(sup.spawn, sup.wait_idle, awaits=True)


NATIVE = "native"
SUPERVISOR = "supervisor"
CONTENDERS = [
    Contender(NATIVE, "asyncio.TaskGroup", ("asyncio",), _open_asyncio_taskgroup, True),
    Contender(NATIVE, "trio nursery", ("trio",), _open_trio_nursery, True),
    Contender(
        "anyio",
        "anyio TaskGroup.start_soon",
        ("asyncio", "trio"),
        _open_anyio_taskgroup,
        True,
    ),
    Contender("aiojobs", "aiojobs Scheduler(limit=None)", ("asyncio",), _open_aiojobs),
    Contender("qakeapi", "QakeAPI BackgroundTaskManager", ("asyncio",), _open_qakeapi),
    Contender(
        SUPERVISOR, "Supervisor.spawn_nowait", ("asyncio", "trio"), _open_supervisor
    ),
    Contender(
        "supervisor-await",
        "await Supervisor.spawn",
        ("asyncio", "trio"),
        _open_supervisor_await,
        memory=False,  # the same records as spawn_nowait
    ),
]


def contenders_for(backend: str) -> list[Contender]:
    return [c for c in CONTENDERS if backend in c.backends]


# -- bodies ------------------------------------------------------------------


def checkpoint_body(backend: str) -> Body:
    """The one-checkpoint body, backend-native (the cheapest yield there is)."""
    if backend == "trio":
        import trio

        async def trio_body() -> None:
            await trio.lowlevel.checkpoint()  # what trio.sleep(0) does, minus a call

        return trio_body

    async def asyncio_body() -> None:
        await asyncio.sleep(0)

    return asyncio_body


async def _sleep0() -> None:
    await anyio.lowlevel.checkpoint()


@dataclass
class _Holding:
    """Bodies that all stay alive until released, counting starts and ends."""

    n: int
    started: int = 0
    finished: int = 0
    release: Any = None
    all_done: Any = None

    def body(self) -> Body:
        release, all_done = self.release, self.all_done

        async def hold() -> None:
            self.started += 1
            await release.wait()
            self.finished += 1
            if self.finished == self.n:
                all_done.set()

        return hold


def _native_event(backend: str) -> Any:
    if backend == "trio":
        import trio

        return trio.Event()
    return asyncio.Event()


# -- measurements ------------------------------------------------------------


@dataclass
class Results:
    """Raw samples, keyed by (backend, n, contender key)."""

    spawn_us: dict[tuple[str, int, str], list[float]] = field(default_factory=dict)
    throughput: dict[tuple[str, int, str], list[float]] = field(default_factory=dict)
    gc_share: dict[tuple[str, int, str], list[float]] = field(default_factory=dict)
    live_kib: dict[tuple[str, int, str], float] = field(default_factory=dict)
    retained_kib: dict[tuple[str, int, str], float] = field(default_factory=dict)
    sync_tput: dict[tuple[str, str], list[float]] = field(default_factory=dict)


class _GCTimer:
    """Wall time spent in cyclic GC collections (a ``gc.callbacks`` hook)."""

    def __init__(self) -> None:
        self.total = 0.0
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = perf()
        else:
            self.total += perf() - self._began


_gc_timer = _GCTimer()
gc.callbacks.append(_gc_timer)


async def measure_throughput(
    contender: Contender, n: int, backend: str
) -> tuple[float, float, float]:
    """One run: (spawn µs/task, tasks/s from first spawn to all done, GC share)."""
    body = checkpoint_body(backend)
    async with contender.open() as group:
        gc_before = _gc_timer.total
        w0, t0 = perf(), clock()
        await group.spawn_many(body, n)
        t1 = clock()
        await group.join()
        w2, t2 = perf(), clock()
    w3, t3 = perf(), clock()
    gc_time = _gc_timer.total - gc_before
    end, wall_end = (t3, w3) if contender.joins_on_exit else (t2, w2)
    return (t1 - t0) / n * 1e6, n / (end - t0), gc_time / (wall_end - w0)


async def measure_live(contender: Contender, n: int, backend: str) -> float:
    """One traced run with all N bodies alive at once: peak KiB per live task."""
    holding = _Holding(
        n, release=_native_event(backend), all_done=_native_event(backend)
    )
    body = holding.body()
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    async with contender.open() as group:
        await group.spawn_many(body, n)
        await _settle(
            lambda: holding.started == n, f"{contender.label}: bodies starting"
        )
        peak = tracemalloc.get_traced_memory()[1]
        holding.release.set()
        await holding.all_done.wait()
    return (peak - before) / n / 1024


async def measure_retained(contender: Contender, n: int, backend: str) -> float:
    """One traced run of N tasks in waves of ``WAVE``: KiB still held once all ended.

    Waves keep the number of live tasks (and so the high-water capacity of
    every set and dict involved, which Python never shrinks) the same for
    every N, so what grows with N is what is kept per *finished* task. The
    contender stays open while measuring: an app-scoped supervisor (or
    scheduler, or manager) lives as long as the app.
    """
    sleep0 = checkpoint_body(backend)
    finished = 0

    async def body() -> None:
        nonlocal finished
        await sleep0()
        finished += 1

    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    async with contender.open() as group:
        spawned = 0
        while spawned < n:
            wave = min(WAVE, n - spawned)
            await group.spawn_many(body, wave)
            spawned += wave
            target = spawned

            def wave_ended(target: int = target) -> bool:
                return finished == target

            await _settle(wave_ended, f"{contender.label}: wave ending")
        # Let done-callbacks and the contenders' own bookkeeping run.
        for _ in range(5):
            await _sleep0()
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0]
    return (retained - before) / 1024


async def _settle(condition: Callable[[], bool], what: str) -> None:
    """Checkpoint until ``condition()`` holds, within a bound."""
    for _ in range(MAX_SETTLE_CHECKPOINTS):
        if condition():
            return
        await _sleep0()
    raise RuntimeError(f"{what}: not done after {MAX_SETTLE_CHECKPOINTS} checkpoints")


#: ``--no-gc``: run with the cyclic GC off, to see how much of a cost is GC.
GC_ENABLED = True


def _run(fn: Callable[..., Awaitable[Any]], *args: Any, backend: str) -> Any:
    gc.collect()  # the previous run's garbage is not this run's cost
    if GC_ENABLED:
        return anyio.run(fn, *args, backend=backend)
    gc.disable()
    try:
        return anyio.run(fn, *args, backend=backend)
    finally:
        gc.enable()


def run_spawn_rounds(results: Results, backend: str, n: int, rounds: int) -> None:
    contenders = contenders_for(backend)
    for c in contenders:  # warm-up: imports, caches, the first loop's setup
        _run(measure_throughput, c, min(n, 2000), backend, backend=backend)
    for r in range(rounds):
        for c in contenders:
            spawn_us, tput, in_gc = _run(
                measure_throughput, c, n, backend, backend=backend
            )
            key = (backend, n, c.key)
            results.spawn_us.setdefault(key, []).append(spawn_us)
            results.throughput.setdefault(key, []).append(tput)
            results.gc_share.setdefault(key, []).append(in_gc)
        print(f"  {backend} N={n:,}: round {r + 1}/{rounds} done", file=sys.stderr)


def run_memory(results: Results, backend: str, n: int) -> None:
    for c in contenders_for(backend):
        if not c.memory:
            continue
        # Tracing restarts for each run, so that one run's leftovers freed
        # during the next do not count against it.
        for table, measure in (
            (results.live_kib, measure_live),
            (results.retained_kib, measure_retained),
        ):
            tracemalloc.start()
            try:
                table[backend, n, c.key] = _run(measure, c, n, backend, backend=backend)
            finally:
                tracemalloc.stop()
    print(f"  {backend} N={n:,}: memory done", file=sys.stderr)


# -- sync tasks ----------------------------------------------------------------


def _trivial() -> None:
    return None


async def sync_supervisor(n: int) -> float:
    async with Supervisor(name="bench-sync", history=HISTORY) as sup:
        t0 = perf()
        for _ in range(n):
            sup.spawn_nowait(_trivial)
        await sup.wait_idle()
        elapsed = perf() - t0
    return n / elapsed


async def sync_to_thread(n: int, backend: str) -> float:
    run_sync = anyio.to_thread.run_sync
    t0 = perf()
    if backend == "trio":
        import trio

        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(run_sync, _trivial)
    else:
        async with asyncio.TaskGroup() as tg:
            for _ in range(n):
                tg.create_task(run_sync(_trivial))
    return n / (perf() - t0)


def run_sync_rounds(results: Results, backend: str, rounds: int) -> None:
    _run(sync_supervisor, 200, backend=backend)
    _run(sync_to_thread, 200, backend, backend=backend)
    for _ in range(rounds):
        results.sync_tput.setdefault((backend, NATIVE), []).append(
            _run(sync_to_thread, SYNC_TASKS, backend, backend=backend)
        )
        results.sync_tput.setdefault((backend, SUPERVISOR), []).append(
            _run(sync_supervisor, SYNC_TASKS, backend=backend)
        )
    print(f"  {backend}: sync done", file=sys.stderr)


# -- report --------------------------------------------------------------------


def spawn_table(results: Results, backend: str, n: int) -> str:
    def med(table: dict[tuple[str, int, str], list[float]], key: str) -> float:
        return median(table.get((backend, n, key), []))

    native_spawn = med(results.spawn_us, NATIVE)
    gc_share = results.gc_share
    native_tput = med(results.throughput, NATIVE)
    rows = []
    for c in contenders_for(backend):
        spawn, tput = med(results.spawn_us, c.key), med(results.throughput, c.key)
        rows.append(
            [
                c.label,
                fmt_num(spawn, 2),
                fmt_ratio(spawn, native_spawn),
                fmt_num(tput),
                fmt_ratio(tput, native_tput),
                f"{100 * med(gc_share, c.key):.0f}%"
                if (backend, n, c.key) in gc_share
                else "-",
                _memory_cell(results.live_kib, backend, n, c, 2),
                _memory_cell(results.retained_kib, backend, n, c, 1),
            ]
        )
    headers = [
        "contender",
        "spawn µs/task",
        "vs native",
        "tasks/s",
        "vs native",
        "in GC",
        "peak KiB/live task",
        "retained KiB",
    ]
    return markdown_table(headers, rows)


def _memory_cell(
    table: dict[tuple[str, int, str], float],
    backend: str,
    n: int,
    c: Contender,
    digits: int,
) -> str:
    if not c.memory and (backend, n, SUPERVISOR) in table:
        return "same"
    return fmt_num(table.get((backend, n, c.key)), digits)


def targets_line(results: Results, backend: str, ns: list[int]) -> str:
    """The issue's targets for this backend, PASS/MISS with the numbers behind them."""
    parts = []
    for n in ns:

        def med(
            table: dict[tuple[str, int, str], list[float]], key: str, n: int = n
        ) -> float:
            return median(table.get((backend, n, key), []))

        sup_spawn, nat_spawn = (
            med(results.spawn_us, SUPERVISOR),
            med(results.spawn_us, NATIVE),
        )
        ok = None if not nat_spawn else sup_spawn <= 2 * nat_spawn
        ratio = fmt_ratio(sup_spawn, nat_spawn)
        parts.append(f"N={n:,} spawn <= 2x native: {verdict(ok)} ({ratio})")
        sup_tput = med(results.throughput, SUPERVISOR)
        if backend == "asyncio":
            ref = med(results.throughput, "aiojobs")
            ok = None if math.isnan(ref) else sup_tput >= ref
            parts.append(
                f"N={n:,} throughput >= aiojobs: {verdict(ok)} "
                f"({fmt_num(sup_tput)} vs {fmt_num(ref)}/s)"
            )
        else:
            ref = med(results.throughput, NATIVE)
            ok = None if math.isnan(ref) else sup_tput >= 0.6 * ref
            parts.append(
                f"N={n:,} throughput >= 0.6x native: {verdict(ok)} "
                f"({fmt_ratio(sup_tput, ref)})"
            )
    retained = [results.retained_kib.get((backend, n, SUPERVISOR)) for n in sorted(ns)]
    known = [r for r in retained if r is not None]
    if len(known) >= 2:
        # Flat: the largest N keeps at most 10% (+16 KiB noise) more than the smallest.
        ok = known[-1] <= known[0] * 1.1 + 16
        detail = " vs ".join(f"{fmt_num(r)} KiB" for r in known)
        parts.append(f"retained memory flat in N: {verdict(ok)} ({detail})")
    else:
        parts.append(
            "retained memory flat in N: n/a (needs two --n values and memory runs)"
        )
    return f"targets ({backend}): " + "; ".join(parts)


def sync_table(results: Results, backends: list[str]) -> str:
    rows = []
    for backend in backends:
        ref = median(results.sync_tput.get((backend, NATIVE), []))
        sup = median(results.sync_tput.get((backend, SUPERVISOR), []))
        rows.append(
            [
                f"{backend}: native nursery + anyio.to_thread.run_sync",
                fmt_num(ref),
                "1.00x",
            ]
        )
        rows.append(
            [
                f"{backend}: Supervisor.spawn_nowait(sync_fn)",
                fmt_num(sup),
                fmt_ratio(sup, ref),
            ]
        )
    return markdown_table(["contender", "tasks/s", "vs to_thread"], rows)


# -- profiling -----------------------------------------------------------------


def profile_supervisor(backend: str, n: int, top: int = 25) -> str:
    """cProfile one Supervisor run, GC off; the top functions by own time, per task.

    The cyclic GC is off here because its pauses are charged to whichever
    function happened to allocate (``create_task``, trio's ``Task.__init__``);
    the tables' "in GC" column measures it instead. cProfile inflates every
    call by roughly the same amount, so read the *call counts per task* and
    the ranking, not the absolute times.
    """
    contender = next(c for c in CONTENDERS if c.key == SUPERVISOR)
    profiler = cProfile.Profile()
    gc.collect()
    gc.disable()
    try:
        profiler.enable()
        anyio.run(measure_throughput, contender, n, backend, backend=backend)
        profiler.disable()
    finally:
        gc.enable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    rows = []
    entries = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
    total = sum(v[2] for _, v in entries)
    for (filename, line, func), (_cc, ncalls, tottime, cumtime, _callers) in entries[
        :top
    ]:
        where = f"{os.path.basename(filename)}:{line}({func})"
        rows.append(
            [
                where,
                f"{ncalls / n:.2f}",
                f"{tottime / n * 1e6:.2f}",
                f"{cumtime / n * 1e6:.2f}",
                f"{100 * tottime / total:.1f}%",
            ]
        )
    return markdown_table(
        ["function", "calls/task", "own µs/task", "cum µs/task", "own %"], rows
    )


# -- main ------------------------------------------------------------------------


def _versions() -> str:
    names = ["nursery-supervisor", "anyio", "trio", "aiojobs", "qakeapi", "structlog"]
    parts = []
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            parts.append(f"{name} {metadata.version(name)}")
    return ", ".join(parts)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--n", type=int, nargs="+", help="task counts (default: 10000 100000)"
    )
    parser.add_argument(
        "--rounds", type=int, help="rounds per backend and N (default: 5)"
    )
    parser.add_argument(
        "--backend", nargs="+", default=["asyncio", "trio"], choices=["asyncio", "trio"]
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: N=2000, 2 rounds unless given (well under a minute)",
    )
    parser.add_argument(
        "--no-memory", action="store_true", help="skip the tracemalloc runs"
    )
    parser.add_argument(
        "--no-sync", action="store_true", help="skip the sync-task section"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also cProfile the Supervisor at the largest N",
    )
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="clock for spawn and throughput (cpu: process time, for busy machines)",
    )
    parser.add_argument(
        "--gate",
        action="store_true",
        help="exit 1 if any target line says MISS (the benchmark gate)",
    )
    parser.add_argument(
        "--no-gc",
        action="store_true",
        help="cyclic GC off during runs (to isolate GC cost)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    if args.n is None:
        args.n = [2000] if quick else [10_000, 100_000]
    if args.rounds is None:
        args.rounds = 2 if quick else 5
    if args.rounds < 1 or any(n < 1 for n in args.n):
        parser.error("--rounds and --n must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    global GC_ENABLED, clock  # noqa: PLW0603 - process-wide switches set once, here
    args = parse_args(argv)
    GC_ENABLED = not args.no_gc
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    configure_production_logging()
    ns = sorted(set(args.n))
    began = perf()
    results = Results()
    for backend in args.backend:
        for n in ns:
            run_spawn_rounds(results, backend, n, args.rounds)
            if not args.no_memory:
                run_memory(results, backend, n)
        if not args.no_sync:
            run_sync_rounds(results, backend, args.rounds)

    print("# Spawn benchmark\n")
    clock_name = "CPU (process time)" if args.clock == "cpu" else "wall"
    notes = [
        f"Python {platform.python_version()} on {platform.system()} "
        f"({os.cpu_count()} CPUs); {_versions()}",
        f"medians over {args.rounds} rounds, contenders alternating, a fresh event "
        f"loop per run; clock: {clock_name}; cyclic GC "
        f"{'on' if GC_ENABLED else 'OFF'}",
        "body: one checkpoint (asyncio.sleep(0) / trio.lowlevel.checkpoint())",
        "aiojobs and QakeAPI have no wait-for-all: their clock stops when their "
        "job table is empty (polled)",
        "memory (tracemalloc, one run each): peak while all N bodies wait on one "
        f"event; retained after N tasks run in waves of {WAVE:,}, contender still open",
        "Supervisor: structlog JSON filtered at WARNING, no on_event, history=1000",
    ]
    print("\n".join(f"- {note}" for note in notes) + "\n")
    missed: list[str] = []
    for backend in args.backend:
        for n in ns:
            print(f"## {backend}, N = {n:,}\n")
            print(spawn_table(results, backend, n))
            print()
        line = targets_line(results, backend, ns)
        if "MISS" in line:
            missed.append(backend)
        print(line)
        print()
    if not args.no_sync:
        print(f"## Sync tasks: {SYNC_TASKS:,} trivial functions in worker threads\n")
        print(sync_table(results, args.backend))
        print()
    if args.profile:
        for backend in args.backend:
            title = (
                f"Supervisor.spawn_nowait, {backend}, N = {ns[-1]:,} (cProfile, GC off)"
            )
            print(f"## Profile: {title}\n")
            print(profile_supervisor(backend, ns[-1]))
            print()
    print(f"(total {perf() - began:.0f} s)")
    if args.gate and missed:
        print(f"benchmark gate: MISS on {', '.join(missed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
