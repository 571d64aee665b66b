"""Sphinx configuration: MyST Markdown pages, furo, API reference by autodoc.

Built with warnings as errors (``nox -s docs``, or ``sphinx-build -W
--keep-going -b html docs docs/_build/html``), nitpicky, and offline: no
intersphinx, so references to other projects' objects are listed in
``nitpick_ignore_regex`` instead of being resolved.

The API reference is one page per public module (``docs/api/``). The hooks
at the end of this file make autodoc render what a user of the package can
use, as checked in a browser: public import paths, no typing overloads, no
constructor for records the supervisor hands out, attrs defaults as values.
"""

from __future__ import annotations

import contextlib
import enum
import importlib
import pkgutil
import re
import sys
import typing
from pathlib import Path
from typing import Any

import attrs
from sphinx.application import Sphinx
from sphinx.pycode import ModuleAnalyzer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import supervisor  # noqa: E402 - needs the path above when not installed

project = "nursery-supervisor"
author = "nursery-supervisor developers"
copyright = "2026, nursery-supervisor developers"
release = "0.1.0"

# No napoleon: its Google-style parsing reads a property docstring's
# "Its restart strategy: ..." as a type; "Raises:" blocks render as
# definition lists without it. Parameters are documented as ``:param x:``.
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
_OTHER_PROJECTS = (
    "anyio|trio|structlog|starlette|fastapi|qakeapi|pytest|_pytest|opentelemetry"
)
_STDLIB = "asyncio|collections|contextlib|contextvars|datetime|enum|logging|re|typing"
nitpick_ignore_regex = [
    (r"py:.*", rf"({_OTHER_PROJECTS})(\..*)?"),
    (r"py:.*", rf"({_STDLIB})\..*"),
    # Type variables, and private classes that appear in annotations.
    (r"py:.*", r"~?(supervisor\._\w+\.)?(T|P|_\w+)"),
    # start_service's Literal aliases; their values are listed in the text.
    (r"py:class", r"(Restart|GiveUp)"),
]

# "bysource" cannot see the source order once __module__ is "supervisor"
# (_public_module_paths); pages that care list members one by one.
autodoc_member_order = "groupwise"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
# Defaults as values (``state_key='supervisor'``, not the constant's name);
# attrs classes get theirs from _attrs_signature.
autodoc_preserve_defaults = False
# The ASGI aliases by name, not expanded into nested Callable[...] types.
autodoc_type_aliases = {
    name: f"supervisor.asgi.{name}"
    for name in ("ASGIApp", "Message", "Receive", "Scope", "Send")
}
# No "Bases: object" under every class; the exception pages ask for it.
autodoc_default_options: dict[str, Any] = {}
# ``BackgroundTask``, not ``supervisor.BackgroundTask``, inside signatures.
python_use_unqualified_type_names = True

#: Records the supervisor creates and hands out: documented by their
#: attributes, never by a constructor signature (they are not publicly
#: constructible; SPEC 2 and issue 7).
RECORDS = frozenset(
    {
        "supervisor.BackgroundTask",
        "supervisor.Service",
        "supervisor.ShutdownReport",
        "supervisor.Spawner",
        "supervisor.SupervisorStats",
        "supervisor.TaskOptions",
        "supervisor.otel.Instrumentation",
    }
)


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


def _plain_signatures() -> None:
    """Show ``spawn(func, /, *args, **kwargs)``, not its typing overloads.

    The overloads exist for type checkers (``ParamSpec`` checks the
    arguments against ``func``); rendered, they are noise with private
    paths (``~supervisor._spawning.T``). autodoc reads overloads from its
    cached source analysis, so drop them there, for every module.
    """
    for module in pkgutil.iter_modules(supervisor.__path__, "supervisor."):
        with contextlib.suppress(Exception):
            importlib.import_module(module.name)
            analyzer = ModuleAnalyzer.for_module(module.name)
            analyzer.analyze()
            analyzer.overloads.clear()


def _default_text(value: Any) -> str:
    """A default as a reader would write it: ``Exception``, not its repr."""
    if isinstance(value, type):
        return value.__qualname__
    if isinstance(value, enum.Enum):
        return f"{type(value).__qualname__}.{value.name}"
    return repr(value)


def _attrs_signature(cls: type) -> str:
    """The signature of an attrs class, with its defaults as values.

    attrs generates ``__init__`` from source that reads the defaults from a
    dict, so autodoc (with ``autodoc_preserve_defaults``) would show
    ``attr_dict['attempts'].default`` for every one of them.
    """
    positional: list[str] = []
    keyword: list[str] = []
    for field in attrs.fields(cls):
        if not field.init:
            continue
        name = field.alias or field.name
        if field.default is attrs.NOTHING:
            text = name
        elif isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
            text = f"{name}=..."
        else:
            text = f"{name}={_default_text(field.default)}"
        (keyword if field.kw_only else positional).append(text)
    params = positional + (["*", *keyword] if keyword else [])
    return f"({', '.join(params)})"


_ANNOTATION_FIXES = (
    # ``*args: P.args`` renders as ``~typing.~P``: for a reader, "any".
    (re.compile(r"^(~typing\.)?~?P$"), "~typing.Any"),
    # Sphinx renders ``Callable[..., X]`` as ``Callable[[...], X]``, and
    # ``Callable[P, X]`` as ``Callable[[~P], X]``.
    (re.compile(r"\[\[(\.\.\.|~P)\], "), "[..., "),
    # The private alias of on_event handlers, shown by what it is.
    (
        re.compile(r"\bEventHandler\b"),
        "~collections.abc.Callable[[str, dict[str, ~typing.Any]], ~typing.Any]",
    ),
)


def _annotations(app: Sphinx) -> dict[str, dict[str, str]]:
    """The type hints autodoc recorded for the description lists."""
    document = getattr(app.env, "current_document", None)
    if document is not None and hasattr(document, "autodoc_annotations"):
        return document.autodoc_annotations  # type: ignore[no-any-return]
    return app.env.temp_data.setdefault("annotations", {})  # Sphinx 8


def _process_signature(  # noqa: PLR0917 - the shape of Sphinx's event
    app: Sphinx,
    what: str,
    name: str,
    obj: Any,
    options: Any,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str, str | None] | None:
    recorded = _annotations(app)
    for key, original in list(recorded.get(name, {}).items()):
        text = original
        for pattern, replacement in _ANNOTATION_FIXES:
            text = pattern.sub(replacement, text)
        recorded[name][key] = text
    if what in ("class", "exception") and (
        name in RECORDS or (isinstance(obj, type) and issubclass(obj, enum.Enum))
    ):
        recorded.pop(name, None)  # no "Parameters" list of private fields
        return "", None
    if what == "class" and isinstance(obj, type) and attrs.has(obj):
        return _attrs_signature(obj), return_annotation
    return None


def setup(app: Sphinx) -> None:
    _public_module_paths()
    _plain_signatures()
    # After autodoc's own listener has recorded the type hints (Sphinx 8).
    app.connect("autodoc-process-signature", _process_signature, priority=600)
