"""Turn the ``exception`` value of a logged failure back into traceback text.

structlog writes a failure's traceback either as the string made by
``format_exc_info`` or as the list of dicts made by ``dict_tracebacks`` (one
dict per exception in the chain, outermost first, as structlog's
``ExceptionDictTransformer`` produces them).  ``python -m supervisor
failures`` shows people the last traceback of each group, so this module
renders either form the way Python prints it, and recovers the error type
from it when a log line lacks ``error_type``.

The value comes from a log file and may be anything: nothing here raises on
odd input.  Stdlib only, and nothing from the rest of the package.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["as_text", "error_type_from", "render_traceback"]

_CAUSE = "The above exception was the direct cause of the following exception:"
_CONTEXT = "During handling of the above exception, another exception occurred:"


def as_text(value: object) -> str | None:
    """A logged value as text: strings as they are, JSON values re-encoded."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def error_type_from(exception: object) -> str | None:
    """Recover the error type from a traceback when the line lacks it."""
    if isinstance(exception, list) and exception and isinstance(exception[0], dict):
        return as_text(exception[0].get("exc_type"))
    if isinstance(exception, str):
        lines = exception.rstrip().splitlines()
        if lines:
            name = lines[-1].partition(":")[0].strip()
            if name and " " not in name:
                return name
    return None


def render_traceback(exception: object) -> str | None:
    """Turn a logged ``exception`` value back into Python's traceback text.

    Accepts the string written by structlog's ``format_exc_info`` (returned
    as is) and the list of dicts written by ``dict_tracebacks`` (one dict per
    exception in the chain, outermost first, as structlog's
    ``ExceptionDictTransformer`` produces them), which is rendered innermost
    first with Python's "direct cause" / "during handling" separators, notes,
    and exception groups.  Returns None when there is no traceback.  Never
    raises: the value comes from a log file and may be anything.
    """
    if isinstance(exception, str):
        return exception.rstrip("\n") or None
    if isinstance(exception, dict):
        exception = [exception]
    if not isinstance(exception, list) or not exception:
        return None
    try:
        lines = _render_chain(exception)
    except RecursionError:
        # Anything that walks the value would recurse again; say what it is.
        return "(a traceback nested too deeply to render)"
    return "\n".join(lines) if lines else None


def _render_chain(stacks: list[Any]) -> list[str]:
    stacks = [stack for stack in stacks if isinstance(stack, dict)]
    lines: list[str] = []
    for index in range(len(stacks) - 1, -1, -1):
        stack = stacks[index]
        lines.extend(_render_stack(stack))
        if index:
            # ``is_cause`` on this stack says how it relates to the one
            # before it in the list, which Python prints after it.
            lines += ["", _CAUSE if stack.get("is_cause") else _CONTEXT, ""]
    return lines


def _render_stack(stack: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    is_group = bool(stack.get("is_group"))
    frames = stack.get("frames")
    if isinstance(frames, list) and frames:
        lines.append(
            "Exception Group Traceback (most recent call last):"
            if is_group
            else "Traceback (most recent call last):"
        )
        for frame in frames:
            if not isinstance(frame, dict):
                continue
            filename, lineno = frame.get("filename"), frame.get("lineno")
            name = frame.get("name")
            if lineno == -1 and not filename:
                lines.append(f"  [{name}]")  # max_frames elision marker
            else:
                lines.append(f'  File "{filename}", line {lineno}, in {name}')
    syntax = stack.get("syntax_error")
    if isinstance(syntax, dict):
        lines.append(f'  File "{syntax.get("filename")}", line {syntax.get("lineno")}')
        lines.append(f"    {str(syntax.get('line', '')).strip()}")
        offset = syntax.get("offset")
        if isinstance(offset, int) and offset > 0:
            lines.append("    " + " " * (offset - 1) + "^")
    exc_type = as_text(stack.get("exc_type")) or "?"
    exc_value = as_text(stack.get("exc_value"))
    lines.append(f"{exc_type}: {exc_value}" if exc_value else exc_type)
    notes = stack.get("exc_notes")
    if isinstance(notes, list):
        lines.extend(str(note) for note in notes)
    subs = stack.get("exceptions")
    if is_group and isinstance(subs, list) and subs:
        for number, sub in enumerate(subs, 1):
            lines.append(f"+---------------- {number} ----------------")
            sub_lines = _render_chain(sub if isinstance(sub, list) else [sub])
            lines.extend(f"| {line}" if line else "|" for line in sub_lines)
        lines.append("+------------------------------------")
    return lines
