"""A stateful property test: random sequences of operations never break the books.

Hypothesis drives a :class:`~hypothesis.stateful.RuleBasedStateMachine`
through spawn / spawn_nowait / spawn_threadsafe (from a real thread) /
cancel / succeed / fail / wait_idle / shutdown, with ``max_concurrency``,
``max_pending`` and ``history`` drawn per example, on asyncio and on trio.

Hypothesis calls rules synchronously, so each example runs one event loop in
a blocking portal (``anyio.from_thread.start_blocking_portal``): rules call
into it with ``portal.call``. ``startup()`` and ``shutdown()`` must happen in
one task, so a host task started in the portal owns the supervisor's
lifespan and runs ``shutdown()`` when a rule asks it to.

Every task is controlled: each attempt waits on a gate that a rule opens
with an outcome (return a value, or raise). So between steps nothing moves,
and the test keeps a small model of what the supervisor must be doing
(which task holds a ``max_concurrency`` slot, the FIFO queue, attempts). After
each step it waits for what the model predicts (tasks that must have started,
tasks that must have ended) under a generous bound, then checks:

* ``spawned == pending + running + succeeded + failed + cancelled``, totals
  never decrease, and the counts agree with the model and with the records;
* each record's state is the model's, and each observed transition is legal
  (``PENDING → RUNNING → terminal``, ``RUNNING → PENDING`` only to retry);
* each task's events (``supervisor.testing.capture_events``) are
  ``task:started``, any ``task:retrying``, then at most one terminal event,
  exactly one once it has ended; likewise exactly one terminal log line;
* ``sup.tasks`` holds the live tasks plus at most ``history`` finished ones.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter, deque
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import attrs
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from supervisor import (
    Overloaded,
    Retry,
    ShutdownReport,
    Supervisor,
    SupervisorClosed,
    TaskState,
)
from supervisor.testing import capture_events

pytest.importorskip("trio")

PENDING, RUNNING = TaskState.PENDING, TaskState.RUNNING
SUCCEEDED, FAILED, CANCELLED = (
    TaskState.SUCCEEDED,
    TaskState.FAILED,
    TaskState.CANCELLED,
)
TERMINAL_EVENTS = frozenset({"task:succeeded", "task:failed", "task:cancelled"})
# Between two steps a queued task may start and end, so a sampled PENDING may
# be followed by any state; the fine-grained order is checked on the events.
LEGAL = {
    PENDING: {PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED},
    RUNNING: {RUNNING, PENDING, SUCCEEDED, FAILED, CANCELLED},  # PENDING: a retry
    SUCCEEDED: {SUCCEEDED},
    FAILED: {FAILED},
    CANCELLED: {CANCELLED},
}
#: Seconds anything the model predicts may take to happen; generous on purpose.
BOUND = 10.0
#: How long a spawn that must wait for room is watched before it is given up.
BLOCKED_FOR = 0.02
RETRY = Retry(attempts=2, on=ValueError, initial=0.0, jitter=0.0)


class Boom(ValueError):
    """The failure a rule makes a task raise."""


class RecordingLogger:
    """A structlog-shaped logger that keeps every line (called on the loop thread)."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def bind(self, **_kw: Any) -> RecordingLogger:
        return self

    def _log(self, level: str, event: str, **fields: Any) -> None:
        self.lines.append({"event": event, "level": level, **fields})

    def debug(self, event: str, **fields: Any) -> None:
        self._log("debug", event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log("info", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log("warning", event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log("error", event, **fields)


class Control:
    """One task's gates: attempt ``k`` waits on ``gates[k]``, then does ``outcomes[k]``.

    Created on the loop thread (anyio events need a running loop).
    """

    def __init__(self, *, sync: bool, attempts: int) -> None:
        self.sync = sync
        self.entered = [anyio.Event() for _ in range(attempts)]
        self.gates: list[Any] = [
            threading.Event() if sync else anyio.Event() for _ in range(attempts)
        ]
        self.outcomes: list[str | None] = [None] * attempts
        self.entries = 0
        self.threads_busy = 0
        self._lock = threading.Lock()

    def _finish(self, k: int) -> int:
        if self.outcomes[k] == "fail":
            raise Boom(f"attempt {k + 1} failed on purpose")
        return k + 1

    async def body_async(self) -> int:
        k = self.entries
        self.entries += 1
        self.entered[k].set()
        await self.gates[k].wait()
        return self._finish(k)

    def body_sync(self) -> int:
        with self._lock:
            k = self.entries
            self.entries += 1
            self.threads_busy += 1
        try:
            anyio.from_thread.run_sync(self.entered[k].set)
            # Bounded: an abandoned thread must still end by itself.
            self.gates[k].wait(timeout=60)
            return self._finish(k)
        finally:
            with self._lock:
                self.threads_busy -= 1

    def release(self, k: int, outcome: str) -> None:
        """Open gate ``k`` (call on the loop thread)."""
        self.outcomes[k] = outcome
        self.gates[k].set()


@attrs.define(eq=False)
class Model:
    """What the test expects of one task."""

    record: Any
    control: Control
    retry: bool
    state: TaskState = PENDING
    attempts: int = 0
    slot: bool = False
    queued: bool = False
    abandoned: bool = False
    seen: list[TaskState] = attrs.Factory(list)

    @property
    def max_attempts(self) -> int:
        return RETRY.attempts if self.retry else 1

    @property
    def live(self) -> bool:
        return self.state in (PENDING, RUNNING)


class Host:
    """Owns the supervisor's lifespan in one task of the portal's loop."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.requests, self._inbox = anyio.create_memory_object_stream[float](1)
        self._outbox, self.replies = anyio.create_memory_object_stream[Any](1)

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        with self._inbox, self._outbox:
            await self.sup.startup()
            task_status.started()
            timeout = await self._inbox.receive()
            try:
                outcome: Any = await self.sup.shutdown(timeout=timeout)
            except BaseException as exc:  # handed to the test, which fails on it
                outcome = exc
            await self._outbox.send(outcome)

    def close(self) -> None:
        self.requests.close()
        self.replies.close()

    async def shutdown(self, timeout: float, during: Any = None) -> Any:
        """Ask the host to shut down; ``during()`` runs once the drain has begun."""
        await self.requests.send(timeout)
        with anyio.fail_after(BOUND + timeout):
            if during is not None:
                while not self.sup.closed:
                    await anyio.lowlevel.checkpoint()
                during()
            return await self.replies.receive()


def configs() -> st.SearchStrategy[dict[str, Any]]:
    def with_pending(mc: int | None) -> st.SearchStrategy[dict[str, Any]]:
        pending = st.just(None) if mc is None else st.sampled_from([None, 1, 2])
        return st.fixed_dictionaries(
            {
                "max_concurrency": st.just(mc),
                "max_pending": pending,
                "history": st.sampled_from([0, 1, 3, 1000]),
            }
        )

    return st.sampled_from([None, 1, 2, 3]).flatmap(with_pending)


# Named functions, not lambdas: Hypothesis describes a lambda by parsing its
# source, and on CPython 3.11 that parse can trip "AST constructor recursion
# depth mismatch" while other threads (the portal's) run.
def _has_live(machine: SupervisorMachine) -> bool:
    return any(m.live for m in machine.models.values())


def _has_closed_gate(machine: SupervisorMachine) -> bool:
    return bool(machine._closed_gates())


def _gate(model: Model) -> int:
    """The gate a live task waits on now, or will first wait on if queued."""
    return model.attempts - 1 if model.state is RUNNING else 0


def _has_tasks(machine: SupervisorMachine) -> bool:
    return bool(machine.models)


def _is_open(machine: SupervisorMachine) -> bool:
    return machine.sup is not None and not machine.closed


class SupervisorMachine(RuleBasedStateMachine):
    """Operations on one supervisor, checked against a model after every step."""

    backend = "asyncio"

    def __init__(self) -> None:
        super().__init__()
        self.stack = contextlib.ExitStack()
        self.sup: Supervisor | None = None
        self.models: dict[str, Model] = {}
        self.queue: deque[Model] = deque()
        self.free_slots: int | None = None
        self.finished = 0
        self.closed = False
        self.report: ShutdownReport | None = None
        self.previous: tuple[int, ...] = (0, 0, 0, 0)
        self.logger = RecordingLogger()
        self.controls: list[Control] = []

    # -- set-up and tear-down ---------------------------------------------

    @initialize(config=configs())
    def start(self, config: dict[str, Any]) -> None:
        self.config = config
        self.events = self.stack.enter_context(capture_events())
        self.portal = self.stack.enter_context(
            anyio.from_thread.start_blocking_portal(self.backend)
        )
        self.sup = Supervisor(
            "machine", shutdown_timeout=BOUND, logger=self.logger, **config
        )
        self.free_slots = config["max_concurrency"]
        self.host = Host(self.sup)
        self.host_future, _ = self.portal.start_task(self.host.run)

    def teardown(self) -> None:
        try:
            if self.sup is not None:
                # Every gate opened: abandoned threads end, the drain is quick.
                self.portal.call(self._open_all_gates)
                if not self.closed:
                    self.portal.call(self.host.shutdown, BOUND)
                self._wait_threads()
                self.host_future.result(timeout=BOUND)
                self.host.close()
        finally:
            self.stack.close()

    async def _open_all_gates(self) -> None:
        for control in self.controls:
            for k, gate in enumerate(control.gates):
                if not gate.is_set():
                    control.release(k, "ok")

    def _wait_threads(self) -> None:
        deadline = time.monotonic() + BOUND
        for control in self.controls:
            while control.threads_busy and time.monotonic() < deadline:
                time.sleep(0.005)
            assert not control.threads_busy, "a worker thread never ended"

    # -- the model ----------------------------------------------------------

    @property
    def cfg_mc(self) -> int | None:
        return self.config["max_concurrency"]

    def _overloaded(self) -> bool:
        """Whether a new task finds neither a slot nor a place in the queue."""
        mc, mp = self.cfg_mc, self.config["max_pending"]
        if mc is None or mp is None:
            return False
        has_room = bool(self.free_slots) and not self.queue
        return not has_room and len(self.queue) >= mp

    def _admit(self, model: Model) -> None:
        if self.free_slots is None:
            self._start_attempt(model)
        elif self.free_slots > 0 and not self.queue:
            self.free_slots -= 1
            model.slot = True
            self._start_attempt(model)
        else:
            model.queued = True
            self.queue.append(model)

    def _start_attempt(self, model: Model) -> None:
        model.attempts += 1
        model.state = RUNNING
        outcome = model.control.outcomes[model.attempts - 1]
        if outcome is not None:
            self._apply(model, outcome)

    def _apply(self, model: Model, outcome: str) -> None:
        """The running attempt ends with ``outcome``."""
        if outcome == "ok":
            self._settle(model, SUCCEEDED)
        elif model.attempts < model.max_attempts:
            self._start_attempt(model)  # retried at once (no backoff)
        else:
            self._settle(model, FAILED)

    def _settle(self, model: Model, state: TaskState) -> None:
        model.state = state
        self.finished += 1
        if model.queued:
            model.queued = False
            self.queue.remove(model)
        if model.slot:
            model.slot = False
            assert self.free_slots is not None
            self.free_slots += 1
            while self.free_slots and self.queue:
                nxt = self.queue.popleft()
                nxt.queued = False
                nxt.slot = True
                self.free_slots -= 1
                self._start_attempt(nxt)

    async def _settled(self) -> None:
        """Wait for what the model says has happened (bounded)."""
        with anyio.fail_after(BOUND):
            for model in self.models.values():
                if not model.live:
                    await model.record.wait_done()
                elif model.state is RUNNING:
                    await model.control.entered[model.attempts - 1].wait()
        # Let every task that was woken reach its gate (or its end).
        await anyio.wait_all_tasks_blocked()

    def _live(self) -> list[Model]:
        return [m for m in self.models.values() if m.live]

    # -- spawning -----------------------------------------------------------

    def _func(self, sync: bool, retry: bool) -> tuple[Any, Control]:
        attempts = RETRY.attempts if retry else 1
        control: Control = self.portal.call(_new_control, sync, attempts)
        self.controls.append(control)  # its gates are opened at teardown
        func = control.body_sync if sync else control.body_async
        return func, control

    def _spawner(self, retry: bool) -> Any:
        assert self.sup is not None
        return self.sup.options(retry=RETRY) if retry else self.sup

    def _adopt(self, record: Any, control: Control, retry: bool) -> None:
        assert record.task_id not in self.models
        model = Model(record, control, retry)
        self.models[record.task_id] = model
        self._admit(model)
        self.portal.call(self._settled)

    @rule(sync=st.booleans(), retry=st.booleans())
    def spawn(self, sync: bool, retry: bool) -> None:
        func, control = self._func(sync, retry)
        spawner = self._spawner(retry)

        async def attempt() -> Any:
            with anyio.move_on_after(BLOCKED_FOR if self._overloaded() else BOUND):
                record = await spawner.spawn(func)
                # Checked in the spawning task: the loop moves on afterwards.
                assert record.state is PENDING
                return record
            return None

        if self.closed:
            with pytest.raises(SupervisorClosed):
                self.portal.call(spawner.spawn, func)
            return
        before = self.portal.call(self.sup_stats).spawned
        record = self.portal.call(attempt)
        if self._overloaded():
            # It waited for room that never came; giving up left no trace.
            assert record is None
            assert self.portal.call(self.sup_stats).spawned == before
            return
        assert record is not None
        self._adopt(record, control, retry)

    @rule(sync=st.booleans(), retry=st.booleans())
    def spawn_nowait(self, sync: bool, retry: bool) -> None:
        func, control = self._func(sync, retry)
        spawner = self._spawner(retry)
        if self.closed:
            with pytest.raises(SupervisorClosed):
                self.portal.call(spawner.spawn_nowait, func)
            return
        if self._overloaded():
            with pytest.raises(Overloaded):
                self.portal.call(spawner.spawn_nowait, func)
            return
        record = self.portal.call(_spawn_nowait_pending, spawner, func)
        self._adopt(record, control, retry)

    @rule(sync=st.booleans(), retry=st.booleans())
    def spawn_threadsafe(self, sync: bool, retry: bool) -> None:
        func, control = self._func(sync, retry)
        spawner = self._spawner(retry)
        returned: list[Any] = []

        def from_thread() -> None:
            try:
                returned.append(spawner.spawn_threadsafe(func))
            except BaseException as exc:  # checked by the test thread
                returned.append(exc)

        thread = threading.Thread(target=from_thread)
        thread.start()
        thread.join(BOUND)
        assert not thread.is_alive()
        (result,) = returned
        if self.closed:
            assert isinstance(result, SupervisorClosed), result
            return
        if self._overloaded():
            assert isinstance(result, Overloaded), result
            return
        assert isinstance(result, str), result
        assert self.sup is not None
        record = self.sup.get(result)
        assert record is not None
        self._adopt(record, control, retry)

    # -- steering tasks -----------------------------------------------------

    def _closed_gates(self) -> list[Model]:
        return [m for m in self._live() if m.control.outcomes[_gate(m)] is None]

    @precondition(_has_closed_gate)
    @rule(data=st.data(), outcome=st.sampled_from(["ok", "fail"]))
    def release(self, data: st.DataObject, outcome: str) -> None:
        """Open the gate of a live task's current attempt (queued: its first)."""
        model = data.draw(st.sampled_from(self._closed_gates()))
        k = _gate(model)
        self.portal.call(model.control.release, k, outcome)
        if model.state is RUNNING and not model.queued:
            self._apply(model, outcome)
        self.portal.call(self._settled)

    @precondition(_has_tasks)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        model = data.draw(st.sampled_from(list(self.models.values())))
        accepted = self.portal.call(model.record.cancel, "by the machine")
        assert accepted is model.live
        if not accepted:
            return
        if model.queued:
            model.attempts = 0
        model.abandoned = model.control.sync and model.state is RUNNING
        self._settle(model, CANCELLED)
        self.portal.call(self._settled)
        assert model.record.cancel_reason == "by the machine"

    @rule(outcome=st.sampled_from(["ok", "fail", "mixed"]))
    def wait_idle(self, outcome: str) -> None:
        """Release every live task, then wait_idle() returns with nothing live."""
        assert self.sup is not None
        if not self.closed:
            for i, model in enumerate(self._live()):
                chosen = outcome if outcome != "mixed" else ("ok", "fail")[i % 2]
                self._release_all_attempts(model, chosen)
        self.portal.call(self._wait_idle_bounded)
        stats = self.portal.call(self.sup_stats)
        assert (stats.pending, stats.running) == (0, 0)
        assert not self._live()

    def _release_all_attempts(self, model: Model, outcome: str) -> None:
        self.portal.call(self._open_gates, model, outcome)
        self._model_released(model, outcome)

    @staticmethod
    def _open_gates(model: Model, outcome: str) -> None:
        for k in range(_gate(model), model.max_attempts):
            if model.control.outcomes[k] is None:
                model.control.release(k, outcome)

    def _model_released(self, model: Model, outcome: str) -> None:
        # A running task's current gate was closed (else it would have moved
        # on); a queued one meets its open gates when it gets a slot.
        if model.state is RUNNING:
            self._apply(model, outcome)

    async def _wait_idle_bounded(self) -> None:
        assert self.sup is not None
        with anyio.fail_after(BOUND):
            await self.sup.wait_idle()
        await self._settled()

    @precondition(_is_open)
    @rule(drain=st.booleans())
    def shutdown(self, drain: bool) -> None:
        """Drain (everything released first) or cancel at once (timeout=0)."""
        live = self._live()

        def open_every_gate() -> None:
            for model in live:
                self._open_gates(model, "ok")

        began = time.monotonic()
        if drain:
            # The gates open once the drain has begun: all of it ends there.
            report = self.portal.call(self.host.shutdown, BOUND, open_every_gate)
        else:
            report = self.portal.call(self.host.shutdown, 0.0)
        elapsed = time.monotonic() - began
        if isinstance(report, BaseException):
            raise report
        assert isinstance(report, ShutdownReport)
        self.closed = True
        self.report = report
        if drain:
            for model in live:
                self._model_released(model, "ok")
            assert not self._live()
            assert report.completed == len(live)
            assert report.cancelled == ()
        else:
            assert elapsed < 0.5 + BOUND / 2  # the 0.5 s grace, plus a bound
            assert report.completed == 0
            assert {t.task_id for t in report.cancelled} == {
                m.record.task_id for m in live
            }
            for model in live:
                if model.queued:
                    model.attempts = 0
                model.abandoned = model.control.sync and model.state is RUNNING
                # Ended by shutdown: settle without starting queued ones.
                model.slot = False
                self._settle(model, CANCELLED)
            assert {t.task_id for t in report.abandoned} == {
                m.record.task_id for m in live if m.abandoned
            }
            for task in report.cancelled:
                assert task.cancel_reason == "shutdown"
        self.portal.call(self._settled)
        # Idempotent: a second call, from any task, returns the same report.
        assert self.sup is not None
        assert self.portal.call(self.sup.shutdown) is report

    # -- invariants ---------------------------------------------------------

    def sup_stats(self) -> Any:
        assert self.sup is not None
        return self.sup.stats()

    @invariant()
    def books_balance(self) -> None:
        if self.sup is None:
            return
        stats, tasks_len, states = self.portal.call(self._snapshot)
        assert stats.spawned == (
            stats.pending
            + stats.running
            + stats.succeeded
            + stats.failed
            + stats.cancelled
        )
        totals = (stats.spawned, stats.succeeded, stats.failed, stats.cancelled)
        assert all(
            now >= before for now, before in zip(totals, self.previous, strict=True)
        )
        self.previous = totals
        assert stats.spawned == len(self.models)
        wanted = Counter(m.state for m in self.models.values())
        assert (
            stats.pending,
            stats.running,
            stats.succeeded,
            stats.failed,
            stats.cancelled,
        ) == (
            wanted[PENDING],
            wanted[RUNNING],
            wanted[SUCCEEDED],
            wanted[FAILED],
            wanted[CANCELLED],
        )
        live = len(self._live())
        history = self.config["history"]
        assert tasks_len == live + min(history, self.finished)
        for task_id, model in self.models.items():
            state = states[task_id]
            assert state is model.state, (model, state)
            if model.seen:
                assert state in LEGAL[model.seen[-1]], (model.seen, state)
            if not model.seen or model.seen[-1] is not state:
                model.seen.append(state)
            if state is PENDING and model.seen.count(RUNNING):
                assert model.retry, model.seen

    async def _snapshot(self) -> tuple[Any, int, dict[str, TaskState]]:
        assert self.sup is not None
        states = {tid: m.record.state for tid, m in self.models.items()}
        live_ids = {tid for tid, m in self.models.items() if m.live}
        assert live_ids <= set(self.sup.tasks)
        return self.sup.stats(), len(self.sup.tasks), states

    @invariant()
    def records_match_the_model(self) -> None:
        for model in self.models.values():
            record = model.record
            assert record.attempts == model.attempts, (record, model)
            assert record.abandoned is model.abandoned, (record, model)
            if model.state is SUCCEEDED:
                assert record.result == model.attempts
                assert record.error is None
            elif model.state is FAILED:
                assert isinstance(record.error, Boom)
            if model.state in (PENDING, RUNNING):
                assert record.completed_at is None

    @invariant()
    def one_terminal_event_and_log_line_each(self) -> None:
        if self.sup is None:
            return
        events = self.portal.call(lambda: list(self.events))
        lines = self.portal.call(lambda: list(self.logger.lines))
        by_task: dict[str, list[dict[str, Any]]] = {}
        for event in events:
            by_task.setdefault(event["task_id"], []).append(event)
        terminal_lines = Counter(
            line["task_id"] for line in lines if line["event"] in TERMINAL_EVENTS
        )
        for task_id, model in self.models.items():
            names = [e["event"] for e in by_task.get(task_id, [])]
            expected = _expected_events(model)
            assert names == expected, (model, names)
            # Each event carries the state it moved the task to.
            for event in by_task.get(task_id, []):
                assert event["state"] == _EVENT_STATE.get(
                    event["event"], event["event"].removeprefix("task:")
                ), event
            assert terminal_lines[task_id] == (0 if model.live else 1), model
            if not model.live:
                (end,) = [e for e in by_task[task_id] if e["event"] in TERMINAL_EVENTS]
                assert end["attempt"] == model.attempts
                assert end["state"] == model.state.value
                if model.abandoned:
                    assert end["abandoned"] is True
        assert set(terminal_lines) <= set(self.models)


_EVENT_STATE = {"task:started": "running", "task:retrying": "pending"}


def _expected_events(model: Model) -> list[str]:
    names = []
    if model.attempts:
        names.append("task:started")
    # Every attempt after the first was preceded by a retry.
    names += ["task:retrying"] * max(0, model.attempts - 1)
    if not model.live:
        names.append(f"task:{model.state.value}")
    return names


def _spawn_nowait_pending(spawner: Any, func: Any) -> Any:
    record = spawner.spawn_nowait(func)
    assert record.state is PENDING  # checked before the loop moves on
    return record


def _new_control(sync: bool, attempts: int) -> Control:
    return Control(sync=sync, attempts=attempts)


@pytest.mark.timeout(180)  # about 10 s per backend here; generous for loaded CI
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_supervisor_state_machine(backend: str) -> None:
    """Random operation sequences keep stats, records, events and logs consistent."""
    machine = type(f"SupervisorMachine_{backend}", (SupervisorMachine,), {})
    machine.backend = backend
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=100,
            stateful_step_count=30,
            deadline=None,
            database=None,
            # No "explain" phase: it traces every line, far too slow here.
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
