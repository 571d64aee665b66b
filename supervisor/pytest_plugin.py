"""A pytest plugin: a started supervisor per test, and no failure goes unnoticed.

Installed with the package, it is loaded automatically (entry point
``pytest11``: ``supervisor``); without the entry point, load it with
``-p supervisor.pytest_plugin`` or ``pytest_plugins = ["supervisor.pytest_plugin"]``
in the root ``conftest.py``. It builds on anyio's pytest plugin, which runs
async tests and fixtures on the backend named by the ``anyio_backend``
fixture.

``task_supervisor``
    A :class:`~supervisor.Supervisor`, started on the test's anyio backend
    before the test and shut down after it. A background task that fails
    behind a test's back is the bug this fixture exists to catch: at
    teardown, every task that ended ``FAILED`` without being expected fails
    the test (pytest reports it as an error at teardown), naming the task,
    its id, its error and its traceback.

``task_supervisor_options``
    The keyword arguments the fixture's supervisor is built with; override
    the fixture (in a ``conftest.py``, a module or a class) or parametrize it
    directly to change them. Defaults: ``name`` is the test's name and
    ``shutdown_timeout`` is :data:`DEFAULT_SHUTDOWN_TIMEOUT`. An ``on_event``
    handler given here still receives every event.

``@pytest.mark.supervisor_expect_failures(raises=..., count=None, match=None)``
    Declares failures the test expects. A failed task is expected when its
    error is an instance of ``raises`` (an exception class or a tuple of
    them; any exception by default) and, with ``match``, when
    ``re.search(match, str(error))`` succeeds. (Keywords only: like
    ``xfail(raises=...)``, because pytest reads ``@mark(SomeClass)`` as
    marking the class.) ``count=None`` expects at least one such failure, ``count=n``
    exactly ``n``; a declared failure that does not happen fails the test
    too, as ``xfail_strict`` would. Stack the marker for several kinds of
    failure. Because the markers are read at teardown, a test can also add
    one as it learns what to expect:
    ``request.node.add_marker(pytest.mark.supervisor_expect_failures(...))``.

The test and the fixture run in the same task (anyio runs a test's async
fixtures and the test itself in one runner task), so the test may even call
``await task_supervisor.shutdown()`` itself, e.g. to inspect the report;
teardown's own ``shutdown()`` then returns that same report.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import anyio
import attrs
import pytest

from ._events import TaskEvent
from ._supervisor import Supervisor

__all__ = [
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "task_supervisor",
    "task_supervisor_options",
]

#: The fixture supervisor's ``shutdown_timeout``: long enough for work a test
#: left behind to finish (and fail, if it is going to), short enough that a
#: task left waiting forever costs a test seconds, not the default's 10.
DEFAULT_SHUTDOWN_TIMEOUT = 2.0

MARKER = "supervisor_expect_failures"

_MARKER_HELP = (
    f"{MARKER}(raises=BaseException, count=None, match=None): background tasks "
    "of the task_supervisor fixture are expected to fail with `raises` (an "
    "exception class or a tuple); count=None means at least one, count=n "
    "exactly n; match is a regex searched in str(error)."
)


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker, so that ``--strict-markers`` accepts it."""
    config.addinivalue_line("markers", _MARKER_HELP)


@attrs.define(eq=False)
class _Failure:
    """One failed task as the fixture saw it, from its ``task:failed`` event."""

    task_id: str
    name: str
    error_type: str
    message: str
    error: BaseException | None  # None only if the record was already gone
    # Rendered when the failure is reported: a fatal error re-raised later by
    # shutdown() would otherwise show the fixture's frames too.
    traceback: str | None

    def matches(self, types: tuple[type[BaseException], ...]) -> bool:
        if self.error is not None:
            return isinstance(self.error, types)
        return any(cls.__name__ == self.error_type for cls in types)

    def describe(self) -> str:
        head = f"task {self.name!r} (id {self.task_id}): {self.error_type}"
        if self.message:
            head += f": {self.message}"
        if self.traceback is None:
            return f"  - {head}"
        body = "\n".join(f"      {line}" for line in self.traceback.splitlines())
        return f"  - {head}\n{body}"


@attrs.define(eq=False)
class _FailureRecorder:
    """A listener of the fixture supervisor: notes every ``task:failed``.

    The event carries the exception itself, so expectations match by
    ``isinstance`` (subclasses included), not just by type name.
    """

    failures: list[_Failure] = attrs.Factory(list)

    def __call__(self, event: TaskEvent) -> None:
        if event.event != "task:failed" or event.error is None:
            return
        error = event.error
        data = event.as_data()
        self.failures.append(
            _Failure(
                task_id=event.task_id,
                name=event.task_name,
                error_type=type(error).__name__,
                message=str(data.get("error", "")),
                error=error,
                traceback="".join(traceback.format_exception(error)).rstrip("\n"),
            )
        )


def _misuse(message: str) -> NoReturn:
    """A misused marker: a plain message, not a traceback through anyio's runner."""
    pytest.fail(message, pytrace=False)


@attrs.define(eq=False)
class _Expectation:
    types: tuple[type[BaseException], ...]
    count: int | None
    match: re.Pattern[str] | None
    seen: int = 0

    @classmethod
    def from_marker(cls, mark: pytest.Mark) -> _Expectation:
        if mark.args:
            _misuse(
                f"@pytest.mark.{MARKER}() takes keywords only, got positional "
                f"{mark.args!r}: write @pytest.mark.{MARKER}(raises=ValueError, "
                "count=1). (pytest reads @mark(SomeClass) as marking SomeClass "
                "itself, so exception classes go in raises=.)"
            )
        kwargs = dict(mark.kwargs)
        raises = kwargs.pop("raises", BaseException)
        count = kwargs.pop("count", None)
        match = kwargs.pop("match", None)
        if kwargs:
            _misuse(
                f"@pytest.mark.{MARKER}() got unknown keyword(s) {sorted(kwargs)}; "
                "it takes raises=, count= and match="
            )
        types = raises if isinstance(raises, tuple) else (raises,)
        if not types or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in types
        ):
            _misuse(
                f"@pytest.mark.{MARKER}(raises=...) takes an exception class or a "
                f"tuple of them, got {raises!r}"
            )
        if count is not None and (
            isinstance(count, bool) or not isinstance(count, int) or count < 0
        ):
            _misuse(
                f"@pytest.mark.{MARKER}(count=...) must be an int >= 0, or None "
                f"for at least one, got {count!r}"
            )
        if match is not None and not isinstance(match, str | re.Pattern):
            _misuse(
                f"@pytest.mark.{MARKER}(match=...) must be a regex string, "
                f"got {match!r}"
            )
        return cls(types, count, None if match is None else re.compile(match))

    def accepts(self, failure: _Failure) -> bool:
        if not failure.matches(self.types):
            return False
        return self.match is None or self.match.search(failure.message) is not None

    @property
    def full(self) -> bool:
        return self.count is not None and self.seen >= self.count

    @property
    def met(self) -> bool:
        return self.seen >= 1 if self.count is None else self.seen == self.count

    def describe(self) -> str:
        names = ", ".join(t.__name__ for t in self.types)
        if len(self.types) > 1:
            names = f"({names})"
        wanted = "at least 1" if self.count is None else f"exactly {self.count}"
        match = "" if self.match is None else f", match={self.match.pattern!r}"
        return f"{MARKER}(raises={names}{match}): expected {wanted}, saw {self.seen}"


def _verdict(
    marks: list[pytest.Mark], failures: list[_Failure], sup: Supervisor
) -> str | None:
    """The teardown failure message, or None when every failure was expected."""
    expectations = [_Expectation.from_marker(m) for m in marks]
    unexpected: list[_Failure] = []
    for failure in failures:
        accepting = [e for e in expectations if e.accepts(failure)]
        if not accepting:
            unexpected.append(failure)
            continue
        # Exact counts are filled first, whatever the markers' order, so that
        # an open-ended marker takes only the rest; past every count, the
        # first accepting marker takes the overflow (and reports it).
        target = next(
            (e for e in accepting if e.count is not None and not e.full),
            next((e for e in accepting if e.count is None), accepting[0]),
        )
        target.seen += 1
    unmet = [e for e in expectations if not e.met]
    if not unexpected and not unmet:
        return None
    parts: list[str] = []
    if unexpected:
        count = len(unexpected)
        parts.append(
            f"{count} background task{'s' if count != 1 else ''} of supervisor "
            f"{sup.name!r} failed unexpectedly:"
        )
        parts.extend(f.describe() for f in unexpected)
        parts.append(
            f"If the test expects this, mark it: @pytest.mark.{MARKER}"
            f"(raises={unexpected[0].error_type}, count={count})"
        )
    if unmet:
        parts.append("Expected background task failures did not happen as declared:")
        parts.extend(f"  - {e.describe()}" for e in unmet)
    return "\n".join(parts)


@pytest.fixture
def task_supervisor_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Keyword arguments for the ``task_supervisor`` fixture's ``Supervisor``."""
    return {"name": request.node.name, "shutdown_timeout": DEFAULT_SHUTDOWN_TIMEOUT}


@pytest.fixture
async def task_supervisor(
    request: pytest.FixtureRequest,
    # Requested so that anyio runs this fixture on the test's backend.
    anyio_backend: Any,
    task_supervisor_options: dict[str, Any],
) -> AsyncIterator[Supervisor]:
    """A started supervisor; its teardown fails the test on unexpected task failures."""
    options = dict(task_supervisor_options)
    options.setdefault("name", request.node.name)
    options.setdefault("shutdown_timeout", DEFAULT_SHUTDOWN_TIMEOUT)
    # Misspelled markers fail before the test runs, not after it.
    for mark in request.node.iter_markers(MARKER):
        _Expectation.from_marker(mark)
    recorder = _FailureRecorder()
    sup = Supervisor(**options)
    sup.add_listener(recorder)
    await sup.startup()
    yield sup
    try:
        await sup.shutdown()
    except anyio.get_cancelled_exc_class():
        raise
    except BaseException as exc:
        # A task's KeyboardInterrupt/SystemExit stops the supervisor and comes
        # out of shutdown(); that task is FAILED and judged below like any
        # other. Anything else (a real Ctrl-C, a misuse error) propagates.
        if not any(f.error is exc for f in recorder.failures):
            raise
    marks = list(request.node.iter_markers(MARKER))
    message = _verdict(marks, recorder.failures, sup)
    if message is not None:
        pytest.fail(message, pytrace=False)
