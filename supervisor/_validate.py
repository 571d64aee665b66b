"""One small kit of attrs validators for every configuration record.

Every option is checked the same way: its **type** first (so ``"5"`` for a
timeout says "must be a number", not ``'>' not supported``), then its
**value**; the offending value is shown with ``!r``; ``bool`` is never
accepted where a number is meant (``True`` is an ``int`` to Python, never to
a user). Each message says what to pass instead.

The validators are plain attrs validators (``validator(instance, attribute,
value)``) and read the option's name from the attribute, through its alias
when it has one, so messages name the keyword the caller wrote.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from typing import Any

import attrs

__all__ = [
    "at_least",
    "callable_or_none",
    "choice",
    "count",
    "exception_types",
    "flag",
    "limit",
    "non_empty_str",
    "number_between",
    "optional_str",
    "seconds",
]

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def _name(attribute: attrs.Attribute[Any]) -> str:
    alias = attribute.alias or attribute.name
    return alias.lstrip("_")


#: The call a record's options are given to, when it is not the class's name
#: (``sup.options(timeout=...)`` builds a ``TaskOptions``), for messages.
CALL_NAMES: dict[type, str] = {}


def _owner(instance: Any) -> str:
    cls = type(instance)
    return CALL_NAMES.get(cls, cls.__name__)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def seconds(
    *, zero_ok: bool = True, none_ok: bool = False, finite: bool = False
) -> Validator:
    """A number of seconds: ``>= 0`` (or ``> 0``), optionally None or finite."""
    bound = ">= 0 seconds" if zero_ok else "a positive number of seconds (> 0)"
    example = "1.5" if zero_ok else "30.0"

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None and none_ok:
            return
        name = _name(attribute)
        alternative = ", or None for no limit" if none_ok else ""
        if not _is_number(value):
            raise TypeError(
                f"{_owner(instance)}({name}=...) must be a number of seconds, got "
                f"{value!r} ({type(value).__name__}); pass e.g. {name}={example}"
                f"{alternative}"
            )
        if math.isnan(value) or value < 0 or (value == 0 and not zero_ok):
            raise ValueError(
                f"{_owner(instance)}({name}=...) must be {bound}, got "
                f"{value!r}; pass e.g. {name}={example}{alternative}"
            )
        if finite and math.isinf(value):
            raise ValueError(
                f"{_owner(instance)}({name}=...) must be a finite number of "
                f"seconds, got {value!r}"
            )

    return check


def limit(*, none_ok: bool = True) -> Validator:
    """A positive int, or None for "no limit" when ``none_ok``."""

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None and none_ok:
            return
        name = _name(attribute)
        alternative = ", or None for no limit" if none_ok else ""
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(
                f"{_owner(instance)}({name}=...) must be a positive int"
                f"{alternative}, got {value!r} ({type(value).__name__})"
            )
        if value <= 0:
            raise ValueError(
                f"{_owner(instance)}({name}=...) must be a positive int"
                f"{alternative}, got {value!r}"
            )

    return check


def count(*, minimum: int = 0, meaning: str = "") -> Validator:
    """An int ``>= minimum``; ``meaning`` explains the number in the message."""
    why = f" ({meaning})" if meaning else ""

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        name = _name(attribute)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(
                f"{_owner(instance)}({name}=...) must be an int >= {minimum}{why}, "
                f"got {value!r} ({type(value).__name__})"
            )
        if value < minimum:
            raise ValueError(
                f"{_owner(instance)}({name}=...) must be an int >= {minimum}{why}, "
                f"got {value!r}"
            )

    return check


def number_between(low: float, high: float) -> Validator:
    """A number within ``[low, high]`` (bools refused)."""

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        name = _name(attribute)
        if not _is_number(value):
            raise TypeError(
                f"{_owner(instance)}({name}=...) must be a number within "
                f"[{low}, {high}], got {value!r} ({type(value).__name__})"
            )
        if math.isnan(value) or not low <= value <= high:
            raise ValueError(
                f"{_owner(instance)}({name}=...) must be within [{low}, {high}], "
                f"got {value!r}"
            )

    return check


def at_least(low: float) -> Validator:
    """A finite number ``>= low`` (bools refused)."""

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        name = _name(attribute)
        if not _is_number(value):
            raise TypeError(
                f"{_owner(instance)}({name}=...) must be a number >= {low}, got "
                f"{value!r} ({type(value).__name__})"
            )
        if math.isnan(value) or value < low or math.isinf(value):
            raise ValueError(
                f"{_owner(instance)}({name}=...) must be a finite number >= {low}, "
                f"got {value!r}"
            )

    return check


def flag(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A real bool: ``1`` or ``"yes"`` are refused rather than guessed at."""
    if not isinstance(value, bool):
        raise TypeError(
            f"{_owner(instance)}({_name(attribute)}=...) must be True or False, got "
            f"{value!r} ({type(value).__name__})"
        )


def non_empty_str(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A non-empty ``str``."""
    if not isinstance(value, str):
        raise TypeError(
            f"{_owner(instance)}({_name(attribute)}=...) must be a non-empty str, "
            f"got {value!r} ({type(value).__name__})"
        )
    if not value:
        raise ValueError(
            f"{_owner(instance)}({_name(attribute)}=...) must be a non-empty str, "
            "got ''"
        )


def optional_str(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A non-empty ``str`` or None."""
    if value is not None:
        non_empty_str(instance, attribute, value)


def choice(choices: Collection[str]) -> Validator:
    """One of a few strings."""
    allowed = ", ".join(repr(c) for c in choices)

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        name = _name(attribute)
        if not isinstance(value, str):
            raise TypeError(
                f"{_owner(instance)}({name}=...) must be one of {allowed}, got "
                f"{value!r} ({type(value).__name__})"
            )
        if value not in choices:
            raise ValueError(
                f"{_owner(instance)}({name}=...) must be one of {allowed}, got "
                f"{value!r}"
            )

    return check


def callable_or_none(what: str) -> Validator:
    """A callable or None; ``what`` says what the callable receives."""

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and not callable(value):
            raise TypeError(
                f"{_owner(instance)}({_name(attribute)}=...) must be a callable "
                f"{what}, or None, got {value!r} ({type(value).__name__})"
            )

    return check


def exception_types(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """An exception class or a non-empty tuple of them."""
    classes = value if isinstance(value, tuple) else (value,)
    if not classes or not all(
        isinstance(c, type) and issubclass(c, BaseException) for c in classes
    ):
        raise TypeError(
            f"{_owner(instance)}({_name(attribute)}=...) takes an exception class "
            f"or a tuple of them, got {value!r}; e.g. on=(ConnectionError, "
            "TimeoutError)"
        )
