"""Sphinx configuration: MyST Markdown pages, furo, API reference by autodoc.

Built with warnings as errors (``nox -s docs``, or ``sphinx-build -W
--keep-going -b html docs docs/_build/html``), nitpicky, and offline: no
intersphinx, so references to other projects' objects are listed in
``nitpick_ignore_regex`` instead of being resolved.
"""

from __future__ import annotations

import contextlib
import sys
import typing
from pathlib import Path

from sphinx.pycode import ModuleAnalyzer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import supervisor  # noqa: E402 - needs the path above when not installed

project = "nursery-supervisor"
author = "nursery-supervisor developers"
copyright = "nursery-supervisor developers"
release = "0.1.0"

# No napoleon: its Google-style parsing reads a property docstring's
# "Its restart strategy: ..." as a type; "Raises:" blocks render as
# definition lists without it.
extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = "nursery-supervisor"

nitpicky = True
# Offline build: objects of other projects cannot be resolved (no
# intersphinx), so they are named here rather than left as warnings.
_OTHER_PROJECTS = "anyio|trio|structlog|starlette|fastapi|qakeapi|pytest|_pytest"
_STDLIB = "asyncio|collections|contextlib|contextvars|datetime|enum|logging|re|typing"
nitpick_ignore_regex = [
    (r"py:.*", rf"({_OTHER_PROJECTS})(\..*)?"),
    (r"py:.*", rf"({_STDLIB})\..*"),
    # Type variables, the private alias of on_event handlers, and private
    # classes that appear in a public class's attrs-generated __init__.
    (r"py:.*", r"~?(supervisor\._\w+\.)?(T|P|EventHandler|_\w+)"),
]

autodoc_member_order = "groupwise"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_default_options = {"show-inheritance": True}


def _public_module_paths() -> None:
    """Document public names where users import them from: ``supervisor.X``.

    The classes live in other modules (``supervisor._task``,
    ``supervisor.exceptions`` ...) and are re-exported; setting
    ``__module__`` for the docs build makes signatures, type hints and
    cross-references use the public path. typing caches
    parametrized generics (``BackgroundTask[Any]``, made at import time), so
    its caches are cleared for the new paths to show.
    """
    for name in supervisor.__all__:
        obj = getattr(supervisor, name)
        if getattr(obj, "__module__", "").startswith("supervisor."):
            with contextlib.suppress(AttributeError, TypeError):
                obj.__module__ = "supervisor"
    for cleanup in getattr(typing, "_cleanups", ()):
        cleanup()


def _plain_spawn_signature() -> None:
    """Show ``spawn(func, /, *args, **kwargs)``, not its typing overloads.

    The overloads exist for type checkers (``ParamSpec`` checks the
    arguments against ``func``); rendered, they are noise. autodoc reads
    overloads from its cached source analysis, so drop them there.
    """
    analyzer = ModuleAnalyzer.for_module("supervisor._supervisor")
    analyzer.analyze()
    analyzer.overloads.pop("Supervisor.spawn", None)


_public_module_paths()
_plain_spawn_signature()
