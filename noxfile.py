"""Tasks: tests on both backends, lint, types, docs, benchmarks, demo.

``./dev SESSION`` runs one of these from a fresh machine (it installs nox in
``.venv-dev`` first); ``nox -l`` lists them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "types"]
nox.options.reuse_existing_virtualenvs = True

#: The Pythons the package supports (pyproject's classifiers); ``tests`` runs
#: on each, ``tests-3.12`` on one. The other sessions need only one.
PYTHONS = ["3.11", "3.12", "3.13"]
PYTHON = PYTHONS[0]


def _pyenv(*args: str) -> list[str]:
    result = subprocess.run(
        ["pyenv", *args], capture_output=True, text=True, check=False
    )
    return result.stdout.split() if result.returncode == 0 else []


def _pyenv_interpreters() -> None:
    """Let nox find every Python in ``PYTHONS`` that pyenv has installed.

    pyenv's ``python3.12`` shim refuses to run unless 3.12 is among the
    active versions, and nox takes the first ``python3.12`` on ``PATH``.
    Activating the installed versions (the current one first, so that
    ``python3`` does not change) makes the shims work. Nothing happens
    without pyenv, or when ``PYENV_VERSION`` is already set.
    """
    if "PYENV_VERSION" in os.environ or shutil.which("pyenv") is None:
        return
    installed = [v for v in _pyenv("versions", "--bare") if re.fullmatch(r"[\d.]+", v)]
    active = (_pyenv("version-name") or ["system"])[0].split(":")
    extra = []
    for wanted in PYTHONS:
        if any(v == wanted or v.startswith(f"{wanted}.") for v in active):
            continue
        matches = [v for v in installed if v == wanted or v.startswith(f"{wanted}.")]
        if matches:
            extra.append(max(matches, key=lambda v: [int(p) for p in v.split(".")]))
    if extra:
        os.environ["PYENV_VERSION"] = ":".join([*active, *extra])


_pyenv_interpreters()


def _install(session: nox.Session, *groups: str) -> None:
    session.install("--upgrade", "pip>=25.1")  # --group needs pip 25.1
    args = ["-e", ".[trio]"]
    for group in groups:
        args += ["--group", group]
    session.install(*args)


def _ensure_redis_server(session: nox.Session) -> None:
    """Install Debian's redis-server for the supervisor.durable tests, once.

    The tests start their own server on a free loopback port; without one
    they skip and say why. Installing needs root (CI runs as root).
    """
    if shutil.which("redis-server"):
        return
    if os.geteuid() != 0:
        session.warn("redis-server missing and not root: the durable tests will skip")
        return
    session.run(
        "sh", "-c", "apt-get update -qq && apt-get install -y -qq redis-server",
        external=True,
    )  # fmt: skip


def _ensure_chromium(session: nox.Session) -> None:
    """Install Debian's Chromium and chromedriver for the task page's browser test.

    The test drives the system browser through the system driver (Selenium
    never downloads one); without them it skips and says why. Installing
    needs root (CI runs as root).
    """
    have_browser = any(shutil.which(n) for n in ("chromium", "chromium-browser"))
    if have_browser and shutil.which("chromedriver"):
        return
    if os.geteuid() != 0:
        session.warn(
            "chromium or chromedriver missing and not root: the browser tests "
            "will skip (apt-get install chromium chromium-driver)"
        )
        return
    session.run(
        "sh", "-c",
        "apt-get update -qq && apt-get install -y -qq chromium chromium-driver",
        external=True,
    )  # fmt: skip


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole test suite on each Python; every async test on asyncio and trio."""
    _ensure_redis_server(session)
    _ensure_chromium(session)
    # docs: the suite builds the docs with -W and runs every example in them.
    _install(session, "tests", "integrations", "docs")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def coverage(session: nox.Session) -> None:
    """The test suite under coverage (subprocesses included), then the report.

    ``[tool.coverage]`` in pyproject.toml says what is measured; the real
    servers and the docs examples run in subprocesses, which coverage
    follows (``patch = ["subprocess"]``) and combines afterwards. The HTML
    report is written to ``htmlcov/``.
    """
    _install(session, "tests", "integrations", "docs", "coverage")
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", *session.posargs)
    session.run("coverage", "combine")
    session.run("coverage", "html")
    session.run("coverage", "report")


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.8")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def types(session: nox.Session) -> None:
    """mypy --strict on the package."""
    _install(session, "types")
    session.run("mypy")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Spawn cost, throughput and memory against the native nurseries and peers.

    ``./dev bench --gate`` exits non-zero when a target is missed (see
    benchmarks/README.md for the targets and the known misses);
    ``--soak`` also runs the storm and the 1M-task soak (``--quick`` for
    short), ``--otel`` the cost of ``supervisor.otel`` off and on.
    """
    _install(session, "bench")
    extra = ("--soak", "--otel")
    args = [a for a in session.posargs if a not in extra]
    session.run("python", "benchmarks/bench_spawn.py", *args)
    quick = ["--quick"] if "--quick" in session.posargs else []
    if "--soak" in session.posargs:
        session.run("python", "benchmarks/bench_soak.py", *quick)
    if "--otel" in session.posargs:
        session.run("python", "benchmarks/bench_otel.py", *quick)


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """A real app under uvicorn spawns tasks (one fails), SIGTERM, failure summary."""
    _install(session, "integrations")
    session.run("python", "examples/demo.py", *session.posargs)


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the HTML docs with warnings as errors (nitpicky, offline).

    The integrations group is installed so that autodoc can import the
    Starlette, FastAPI and QakeAPI modules for the API reference.
    """
    _install(session, "docs", "integrations")
    session.run(
        "sphinx-build",
        "-W",
        "--keep-going",
        "-b",
        "html",
        "docs",
        "docs/_build/html",
        *session.posargs,
    )
