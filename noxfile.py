"""Tasks: tests on both backends, lint, types, docs, benchmarks, demo.

``./dev SESSION`` runs one of these from a fresh machine (it installs nox in
``.venv-dev`` first); ``nox -l`` lists them.
"""

from __future__ import annotations

import os
import shutil

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "types"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"


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


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite; every async test runs on asyncio and trio."""
    _ensure_redis_server(session)
    # docs: the suite builds the docs with -W and runs every example in them.
    _install(session, "tests", "integrations", "docs")
    session.run("pytest", *session.posargs)


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
    """Spawn cost, throughput and memory against the native nurseries and peers."""
    _install(session, "bench")
    session.run("python", "benchmarks/bench_spawn.py", *session.posargs)


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
