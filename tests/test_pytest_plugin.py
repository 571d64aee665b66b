"""The pytest plugin, run for real inside pytester on asyncio and trio.

Each test writes a small test file, runs pytest on it with the plugin and
anyio, and checks the outcomes and the report. The inner ``conftest.py``
parametrizes ``anyio_backend`` over both backends, so every inner test runs
twice and every outcome count below is per backend times two.
"""

from __future__ import annotations

import importlib.metadata
import sys
import tomllib
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]


def _plugin_args() -> tuple[str, ...]:
    """How the inner runs load the plugin: as users do, installed or not.

    Installed, the ``pytest11`` entry point loads it (``-p supervisor``
    also works when autoloading is disabled); from a source checkout that is
    not installed, ``-p supervisor.pytest_plugin``. Naming the module when
    the entry point has loaded it would register it twice.
    """
    entry_points = importlib.metadata.entry_points(group="pytest11")
    if any(ep.value == "supervisor.pytest_plugin" for ep in entry_points):
        return ("-p", "anyio", "-p", "supervisor")
    return ("-p", "anyio", "-p", "supervisor.pytest_plugin")


PLUGIN_ARGS = _plugin_args()

CONFTEST = '''
import asyncio

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


def running_backend():
    """Which event loop runs the caller: "trio" or "asyncio"."""
    try:
        import trio

        trio.lowlevel.current_task()
    except (ImportError, RuntimeError):
        asyncio.current_task()  # raises if no loop: neither backend
        return "asyncio"
    return "trio"
'''

# The inner runs share this process's imports: a plugin module that this
# process imported before pytest could mark it for assertion rewriting makes
# pytest warn that it cannot rewrite it (it has no asserts to rewrite).
PYPROJECT = """
[tool.pytest.ini_options]
anyio_mode = "auto"
filterwarnings = ["error", "ignore::pytest.PytestAssertRewriteWarning"]
addopts = ["--strict-markers", "-p", "no:cacheprovider"]
"""


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester directory with the inner conftest and configuration."""
    pytester.makeconftest(CONFTEST)
    pytester.makepyprojecttoml(PYPROJECT)
    return pytester


def run(pytester: pytest.Pytester, source: str) -> pytest.RunResult:
    pytester.makepyfile(test_inner=source)
    return pytester.runpytest(*PLUGIN_ARGS)


def test_fixture_gives_a_started_supervisor_on_the_tests_backend(
    inner: pytest.Pytester,
) -> None:
    """The fixture's supervisor runs, on the backend the test runs on, and drains."""
    result = run(
        inner,
        """
        from conftest import running_backend
        from supervisor import Supervisor, TaskState, current_supervisor

        async def double(x):
            return 2 * x

        async def test_it(task_supervisor, anyio_backend, request):
            assert isinstance(task_supervisor, Supervisor)
            assert task_supervisor.running
            assert task_supervisor.name == request.node.name
            assert current_supervisor() is task_supervisor
            task = await task_supervisor.spawn(double, 21)
            assert await task.wait() == 42
            assert running_backend() == anyio_backend
        """,
    )
    result.assert_outcomes(passed=2)


def test_unexpected_failure_fails_the_test_at_teardown(inner: pytest.Pytester) -> None:
    """A task failing behind the test's back is reported with its name, id and error."""
    result = run(
        inner,
        """
        async def send_report():
            raise ValueError("disk full")

        async def test_it(task_supervisor):
            task = await task_supervisor.spawn(send_report)
            print("TASK-ID", task.task_id)
        """,
    )
    result.assert_outcomes(passed=2, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_it[[]asyncio[]]*",
            "1 background task of supervisor 'test_it[[]asyncio[]]' failed "
            "unexpectedly:",
            "  - task 'send_report' (id *): ValueError: disk full",
            "*Traceback (most recent call last):*",
            '*raise ValueError("disk full")*',
            "*ValueError: disk full",
            "If the test expects this, mark it: "
            "@pytest.mark.supervisor_expect_failures(raises=ValueError, count=1)",
        ]
    )
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_it[[]trio[]]*"])
    # The id in the report is the failed task's id.
    ids = [line.split()[-1] for line in result.outlines if line.startswith("TASK-ID")]
    assert len(ids) == 2
    for task_id in ids:
        assert f"(id {task_id}): ValueError: disk full" in result.stdout.str()


def test_every_unexpected_failure_is_listed(inner: pytest.Pytester) -> None:
    """Several failures in one test are all named, whatever their type."""
    result = run(
        inner,
        """
        import supervisor

        async def fail(exc):
            raise exc

        def sync_fail():
            raise LookupError("no such user")

        async def test_it(task_supervisor):
            await task_supervisor.options(name="first").spawn(fail, KeyError("k"))
            await task_supervisor.options(name="second").spawn(fail, OSError("io"))
            await task_supervisor.options(name="third").spawn(sync_fail)
        """,
    )
    result.assert_outcomes(passed=2, errors=2)
    result.stdout.fnmatch_lines(
        [
            "3 background tasks of supervisor 'test_it[[]*[]]' failed unexpectedly:",
            "  - task 'first' (id *): KeyError: 'k'",
            "  - task 'second' (id *): OSError: io",
            "  - task 'third' (id *): LookupError: no such user",
        ],
        consecutive=False,
    )


def test_expected_failures_pass(inner: pytest.Pytester) -> None:
    """Failures declared with the marker (type, count, match) pass the test."""
    result = run(
        inner,
        """
        import pytest

        async def fail(exc):
            raise exc

        @pytest.mark.supervisor_expect_failures(raises=ValueError, count=2)
        async def test_count(task_supervisor):
            await task_supervisor.spawn(fail, ValueError("a"))
            await task_supervisor.spawn(fail, ValueError("b"))

        @pytest.mark.supervisor_expect_failures(raises=LookupError, match="user 4[0-9]")
        async def test_subclass_and_match(task_supervisor):
            await task_supervisor.spawn(fail, KeyError("user 42"))

        @pytest.mark.supervisor_expect_failures(raises=(OSError, ValueError))
        async def test_tuple_at_least_one(task_supervisor):
            for _ in range(3):
                await task_supervisor.spawn(fail, OSError("io"))

        @pytest.mark.supervisor_expect_failures
        async def test_bare_marker_any_exception(task_supervisor):
            await task_supervisor.spawn(fail, RuntimeError("anything"))

        @pytest.mark.supervisor_expect_failures(raises=ValueError, count=1)
        @pytest.mark.supervisor_expect_failures(raises=Exception)
        async def test_stacked_markers(task_supervisor):
            await task_supervisor.spawn(fail, ValueError("one"))
            await task_supervisor.spawn(fail, ValueError("overflow"))
            await task_supervisor.spawn(fail, KeyError("other"))

        async def test_added_at_run_time(task_supervisor, request):
            request.node.add_marker(
                pytest.mark.supervisor_expect_failures(raises=ZeroDivisionError)
            )
            await task_supervisor.spawn(fail, ZeroDivisionError("late"))
        """,
    )
    result.assert_outcomes(passed=12)


def test_expectations_that_do_not_hold_fail(inner: pytest.Pytester) -> None:
    """A declared failure that does not happen (as often as declared) fails the test."""
    result = run(
        inner,
        """
        import pytest

        async def fail(exc):
            raise exc

        @pytest.mark.supervisor_expect_failures(raises=KeyError)
        async def test_missing(task_supervisor):
            pass

        @pytest.mark.supervisor_expect_failures(raises=ValueError, count=2)
        async def test_too_few(task_supervisor):
            await task_supervisor.spawn(fail, ValueError("only one"))

        @pytest.mark.supervisor_expect_failures(raises=ValueError, match="^disk")
        async def test_no_match(task_supervisor):
            await task_supervisor.spawn(fail, ValueError("network down"))
        """,
    )
    result.assert_outcomes(passed=6, errors=6)
    result.stdout.fnmatch_lines(
        [
            "Expected background task failures did not happen as declared:",
            "  - supervisor_expect_failures(raises=KeyError): "
            "expected at least 1, saw 0",
        ]
    )
    result.stdout.fnmatch_lines(
        ["  - supervisor_expect_failures(raises=ValueError): expected exactly 2, saw 1"]
    )
    # Not matching ``match`` makes the failure unexpected, and the
    # expectation unmet: both are said.
    result.stdout.fnmatch_lines(
        [
            "  - task 'fail' (id *): ValueError: network down",
            "*",
            "Expected background task failures did not happen as declared:",
            "  - supervisor_expect_failures(raises=ValueError, match='^disk'): "
            "expected at least 1, saw 0",
        ],
        consecutive=False,
    )


def test_misused_marker_fails_before_the_test_runs(inner: pytest.Pytester) -> None:
    """A positional exception class (which pytest would misread) is refused at setup."""
    result = run(
        inner,
        """
        import pytest

        @pytest.mark.supervisor_expect_failures(raises=ValueError, counts=1)
        async def test_typo(task_supervisor):
            raise AssertionError("the body must not run")

        @pytest.mark.supervisor_expect_failures.with_args(ValueError)
        async def test_positional(task_supervisor):
            raise AssertionError("the body must not run")
        """,
    )
    result.assert_outcomes(errors=4)
    assert "the body must not run" not in result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_typo*",
            "*got unknown keyword(s) [[]'counts'[]]; "
            "it takes raises=, count= and match=",
        ],
        consecutive=False,
    )
    result.stdout.fnmatch_lines(
        ["*takes keywords only*write @pytest.mark.supervisor_expect_failures(raises=*"]
    )


def test_options_fixture_configures_the_supervisor(inner: pytest.Pytester) -> None:
    """Overriding task_supervisor_options configures it; its on_event still runs."""
    result = run(
        inner,
        """
        import pytest

        SEEN = []

        @pytest.fixture
        def task_supervisor_options():
            return {
                "name": "custom",
                "max_concurrency": 1,
                "on_event": lambda name, data: SEEN.append(name),
            }

        async def ok():
            return "ok"

        async def boom():
            raise ValueError("still caught")

        async def test_it(task_supervisor):
            assert task_supervisor.name == "custom"
            assert task_supervisor.max_concurrency == 1
            SEEN.clear()
            await (await task_supervisor.spawn(ok)).wait()
            assert SEEN == ["task:started", "task:succeeded"]
            await task_supervisor.spawn(boom)
        """,
    )
    result.assert_outcomes(passed=2, errors=2)
    result.stdout.fnmatch_lines(
        ["1 background task of supervisor 'custom' failed unexpectedly:"]
    )


def test_test_may_shut_down_the_supervisor_itself(inner: pytest.Pytester) -> None:
    """The test runs in the fixture's task, so it may call shutdown() itself."""
    result = run(
        inner,
        """
        import anyio

        async def forever():
            await anyio.sleep_forever()

        async def test_it(task_supervisor):
            task = await task_supervisor.spawn(forever)
            report = await task_supervisor.shutdown(timeout=0)
            assert report.cancelled == (task,)
            assert task.cancel_reason == "shutdown"
        """,
    )
    result.assert_outcomes(passed=2)


def test_leftover_work_is_cut_off_after_the_short_default_timeout(
    inner: pytest.Pytester,
) -> None:
    """A task left waiting forever is cancelled at teardown; that is no failure."""
    result = run(
        inner,
        """
        import anyio
        from supervisor.pytest_plugin import DEFAULT_SHUTDOWN_TIMEOUT

        async def forever():
            await anyio.sleep_forever()

        async def test_it(task_supervisor):
            assert task_supervisor.shutdown_timeout == DEFAULT_SHUTDOWN_TIMEOUT
            await task_supervisor.spawn(forever)
        """,
    )
    result.assert_outcomes(passed=2)


def test_fatal_task_error_is_judged_like_any_failure(inner: pytest.Pytester) -> None:
    """A task's KeyboardInterrupt fails (or, declared, passes) the test; runs go on."""
    inner.makepyfile(
        test_inner="""
        import pytest

        async def interrupt():
            raise KeyboardInterrupt

        async def test_unexpected(task_supervisor):
            await task_supervisor.options(name="stopper").spawn(interrupt)
            await task_supervisor.wait_idle()

        @pytest.mark.supervisor_expect_failures(raises=KeyboardInterrupt, count=1)
        async def test_expected(task_supervisor):
            await task_supervisor.spawn(interrupt)
            await task_supervisor.wait_idle()

        async def test_after(task_supervisor):
            pass
        """
    )
    # In a subprocess: were the interrupt to escape, it must not stop this run.
    result = inner.runpytest_subprocess(*PLUGIN_ARGS, timeout=120)
    result.assert_outcomes(passed=6, errors=2)
    result.stdout.fnmatch_lines(["  - task 'stopper' (id *): KeyboardInterrupt"])


def test_capture_events_sees_the_fixture_supervisor(inner: pytest.Pytester) -> None:
    """capture_events() taps the fixture's supervisor, started before the test."""
    result = run(
        inner,
        """
        import pytest
        from supervisor.testing import capture_events

        async def fail():
            raise ValueError("bad")

        @pytest.mark.supervisor_expect_failures(raises=ValueError, count=1)
        async def test_it(task_supervisor):
            with capture_events() as events:
                task = await task_supervisor.spawn(fail)
                await task_supervisor.wait_idle()
            assert [(e["event"], e["task_id"]) for e in events] == [
                ("task:started", task.task_id),
                ("task:failed", task.task_id),
            ]
        """,
    )
    result.assert_outcomes(passed=2)


def test_entry_point_names_the_plugin_module() -> None:
    """pyproject registers the plugin under pytest11 as ``supervisor``."""
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    entry_points = data["project"]["entry-points"]["pytest11"]
    assert entry_points == {"supervisor": "supervisor.pytest_plugin"}
    __import__(entry_points["supervisor"])
    assert "supervisor.pytest_plugin" in sys.modules
