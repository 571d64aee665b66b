"""Validation of configuration values, with messages that say what to pass."""

from __future__ import annotations

import math

__all__ = ["check_limit", "check_seconds"]


def check_limit(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(
            f"{name} must be a positive int or None (no limit), got {value!r}"
        )
    return value


def check_seconds(name: str, value: float, *, zero_ok: bool = True) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or math.isnan(value)
    ):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        raise ValueError(f"{name} must be {bound} seconds, got {value!r}")
    return float(value)
