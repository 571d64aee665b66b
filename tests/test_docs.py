"""The documentation's code runs, and the docs build without a warning.

Convention (documented in docs/about-docs.md): a code block is executed when
it is written as a MyST ``{code-block} python`` directive with the class
``runnable``::

    ```{code-block} python
    :class: runnable

    ...
    ```

Plain `````python`` fences are shown, not run (they need a server, a
framework app under a real server, or are fragments). A runnable block is a
complete program, run in a fresh interpreter (so that a block that
configures logging cannot leak into another): if it defines ``async def
main()``, ``main`` is run with ``anyio.run`` on asyncio and on trio; blocks
with the class ``pytest`` too are written to a test file and run by pytest
with this package's plugin.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

_OPEN = re.compile(r"^(?P<fence>`{3,}|~{3,})\{code-block\}\s+python\s*$")
_OPTION = re.compile(r"^:(?P<name>[\w-]+):\s*(?P<value>.*)$")

# Frameworks that only some snippets need; such a snippet is skipped (with
# the reason) where the framework is not installed.
_OPTIONAL = (
    "starlette",
    "fastapi",
    "httpx",
    "qakeapi",
    "uvicorn",
    "hypercorn",
    "opentelemetry",
)

# The pages whose examples must run (issue 4): each must have at least one.
_MUST_RUN = ("tutorial", "concepts", "testing", "logging", "migration")

_RUNNER = """
import sys

import anyio

label, backend = sys.argv[1], sys.argv[2]
code = sys.stdin.read()
namespace = {"__name__": "__docs__", "__file__": label}
exec(compile(code, label, "exec"), namespace)
if backend != "script":
    anyio.run(namespace["main"], backend=backend)
"""


class Snippet(NamedTuple):
    page: str  # docs-relative path without suffix, e.g. "howto/asgi"
    line: int  # 1-based line of the opening fence
    classes: frozenset[str]
    code: str

    @property
    def label(self) -> str:
        return f"docs/{self.page}.md:{self.line}"


def collect(docs: Path = DOCS) -> list[Snippet]:
    """Every ``{code-block} python`` with the class ``runnable`` in ``docs``."""
    snippets: list[Snippet] = []
    for path in sorted(docs.rglob("*.md")):
        if "_build" in path.parts:
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        index = 0
        while index < len(lines):
            opened = _OPEN.match(lines[index])
            index += 1
            if opened is None:
                continue
            start = index
            fence = opened["fence"]
            classes: set[str] = set()
            while index < len(lines) and (option := _OPTION.match(lines[index])):
                if option["name"] == "class":
                    classes.update(option["value"].split())
                index += 1
            body: list[str] = []
            while index < len(lines) and lines[index].strip() != fence:
                body.append(lines[index])
                index += 1
            index += 1  # the closing fence
            if "runnable" in classes:
                page = path.relative_to(docs).with_suffix("").as_posix()
                snippets.append(
                    Snippet(page, start, frozenset(classes), "\n".join(body) + "\n")
                )
    return snippets


def _has_async_main(code: str) -> bool:
    tree = ast.parse(code)
    return any(
        isinstance(node, ast.AsyncFunctionDef) and node.name == "main"
        for node in tree.body
    )


def _missing_frameworks(code: str) -> list[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.partition(".")[0])
    return sorted(
        name
        for name in names
        if name in _OPTIONAL and importlib.util.find_spec(name) is None
    )


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # Import this checkout even where the package is not installed.
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    env.pop("PYTEST_ADDOPTS", None)
    return env


def _cases() -> list[Any]:
    cases = []
    for snippet in collect():
        if "pytest" in snippet.classes:
            modes = ["pytest"]
        elif _has_async_main(snippet.code):
            modes = ["asyncio", "trio"]
        else:
            modes = ["script"]
        cases.extend(
            pytest.param(snippet, mode, id=f"{snippet.label}-{mode}") for mode in modes
        )
    return cases


def _run(
    command: list[str], stdin: str | None, cwd: Path
) -> subprocess.CompletedProcess[str]:
    """Run an example in a fresh interpreter, bounded."""
    return subprocess.run(
        command,
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_env(),
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(("snippet", "mode"), _cases())
def test_snippet_runs(snippet: Snippet, mode: str, tmp_path: Path) -> None:
    """A runnable snippet runs to completion in a fresh interpreter."""
    missing = _missing_frameworks(snippet.code)
    if missing:
        pytest.skip(f"{snippet.label} needs {', '.join(missing)}, not installed")
    if mode == "pytest":
        (tmp_path / "test_snippet.py").write_text(snippet.code, encoding="utf-8")
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            # Block the entry point and load by name: works installed or not.
            "-p",
            "no:supervisor",
            "-p",
            "supervisor.pytest_plugin",
            "-W",
            "error",
            "--rootdir",
            str(tmp_path),
            "-c",
            os.devnull,
            "test_snippet.py",
        ]
        stdin = None
    else:
        command = [sys.executable, "-c", _RUNNER, snippet.label, mode]
        stdin = snippet.code
    result = _run(command, stdin, tmp_path)
    assert result.returncode == 0, (
        f"{snippet.label} ({mode}) exited with {result.returncode}\n"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )
    if mode == "pytest":
        assert re.search(r"\b\d+ passed\b", result.stdout), result.stdout
        assert not re.search(r"\b(failed|error|skipped|xfailed)\b", result.stdout), (
            result.stdout
        )


# What the README's "Use" example leaves to the reader's app.
_README_PRELUDE = """
import anyio

async def send_email(to: str, timeout: int) -> None:
    await anyio.sleep(0)

def generate_report(rows: list[int]) -> int:
    return sum(rows)

rows = [1, 2, 3]

async def main() -> None:
"""
_README_CHECK = """
    assert await task.wait() is None
    assert result == 6
    assert report.state.value == "succeeded"
    assert sup.stats().succeeded == 2
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_readme_use_example_runs(backend: str, tmp_path: Path) -> None:
    """The README's "Use" block, inside a main() with the app's functions."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    use = readme[readme.index("## Use") :]
    start = use.index("```python\n") + len("```python\n")
    body = use[start : use.index("\n```", start)]
    code = _README_PRELUDE + "".join(
        f"    {line}\n" if line else "\n" for line in body.splitlines()
    )
    code += _README_CHECK
    command = [sys.executable, "-c", _RUNNER, "README.md:Use", backend]
    result = _run(command, code, tmp_path)
    assert result.returncode == 0, f"{code}\n--- stderr ---\n{result.stderr}"
    assert "spawned=2" in result.stdout, result.stdout  # print(sup.stats())


def test_required_pages_have_runnable_examples() -> None:
    """The tutorial, concepts, testing, logging and migration pages are executed."""
    pages = {snippet.page for snippet in collect()}
    missing = [page for page in _MUST_RUN if page not in pages]
    assert not missing, f"no runnable example on: {missing}"


def test_collect_reads_the_convention(tmp_path: Path) -> None:
    """Only ``runnable`` code-blocks are collected, with their options and body."""
    (tmp_path / "page.md").write_text(
        "\n".join(
            [
                "# Page",
                "```python",
                "shown_only = True",
                "```",
                "```{code-block} python",
                ":caption: not runnable",
                "",
                "also_shown = True",
                "```",
                "````{code-block} python",
                ":class: runnable extra",
                ":caption: Example",
                "",
                "x = 1",
                "```",  # a shorter fence inside does not close the block
                "y = 2",
                "````",
            ]
        ),
        encoding="utf-8",
    )
    [snippet] = collect(tmp_path)
    assert snippet.page == "page"
    assert snippet.line == 10
    assert snippet.classes == {"runnable", "extra"}
    assert snippet.code == "\nx = 1\n```\ny = 2\n"


@pytest.fixture(scope="module")
def built_docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The HTML docs, built once for this module with ``sphinx-build -W``."""
    for module in ("sphinx", "myst_parser", "furo"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (the `docs` dependency group)")
    tmp_path = tmp_path_factory.mktemp("docs")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(DOCS),
            str(tmp_path / "html"),
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return tmp_path / "html"


def test_sphinx_build_has_no_warnings(built_docs: Path) -> None:
    """``sphinx-build -W`` (nitpicky, offline) builds the HTML docs."""
    assert (built_docs / "index.html").is_file()


# What autodoc shows when left to itself (issue 11): attrs-generated defaults,
# typing overloads' ParamSpec, private module paths, FastAPI's Depends().
_RAW_AUTODOC = re.compile(
    r"attr_dict\[|~typing\.|~P\b|supervisor\._[a-z]|Depends\(dependency|use_cache"
)
_RECORDS = (
    "BackgroundTask",
    "Service",
    "ShutdownReport",
    "Spawner",
    "SupervisorStats",
    "TaskOptions",
)


def test_api_reference_shows_the_public_api(built_docs: Path) -> None:
    """One page per module, no autodoc internals, records without constructors."""
    pages = {
        page.stem: page.read_text("utf-8") for page in built_docs.glob("api/*.html")
    }
    assert {"core", "records", "exceptions", "asgi", "fastapi", "qakeapi"} <= set(pages)
    for name, html in pages.items():
        raw = sorted(set(_RAW_AUTODOC.findall(html)))
        assert not raw, f"api/{name}.html shows autodoc internals: {raw}"
    for record in _RECORDS:
        anchor = f'id="supervisor.{record}"'
        page = next(html for html in pages.values() if anchor in html)
        header = page.split(anchor, 1)[1].split("</dt>", 1)[0]
        assert "sig-paren" not in header, f"{record} is shown with a constructor"
    supervisor_doc = pages["core"].split('id="supervisor.Supervisor"', 1)[1]
    parameters = supervisor_doc.split("</dl>", 1)[0]
    for param in (
        "name",
        "shutdown_timeout",
        "max_concurrency",
        "max_pending",
        "thread_limit",
        "history",
        "on_event",
        "logger",
        "event_timeout",
    ):
        assert re.search(
            rf"<strong>{param}</strong>[^<]*\(.*?\).*?\u2013", parameters
        ), f"Supervisor parameter {param!r} has no description"
