"""Checking what is spawned, at the call that spawns it (SPEC 7).

Mistakes are cheapest to fix where they are made, so ``spawn`` rejects a
coroutine object, a non-callable or arguments that do not fit before anything
is scheduled. For ``async def`` functions the coroutine object is created
right here: Python binds the arguments then, for free, and the runner awaits
that same coroutine later. Plain functions run in a thread later, so their
arguments are checked against ``inspect.signature`` (cached per function).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from inspect import CO_ASYNC_GENERATOR, CO_COROUTINE, CO_GENERATOR
from types import CoroutineType, FunctionType
from typing import Any, NoReturn

__all__ = [
    "callable_name",
    "check_sync_arguments",
    "is_async_callable",
    "make_coroutine",
    "make_coroutine_fast",
    "prepare",
    "reject_awaitable",
]

_GENERATORS = CO_GENERATOR | CO_ASYNC_GENERATOR

_SPAWN_HINT = (
    "spawn(func, *args, **kwargs) passes every argument to func unchanged; "
    "per-task options go through sup.options(name=..., timeout=...).spawn(...)"
)


def callable_name(func: Callable[..., Any]) -> str:
    """A readable default task name: the function's qualified name."""
    if type(func) is FunctionType:
        return func.__qualname__
    while isinstance(func, functools.partial):
        func = func.func
    name = getattr(func, "__qualname__", None)
    if name is None:
        name = type(func).__qualname__
    return str(name)


def is_async_callable(func: Any) -> bool:
    """Decide async vs. thread, rejecting what can never be spawned."""
    if type(func) is FunctionType:
        # The common case, decided from the code flags alone (inspect's
        # helpers cost several times more on the spawn path).
        flags = func.__code__.co_flags
        if flags & _GENERATORS:
            raise TypeError(_generator_message(func))
        return bool(flags & CO_COROUTINE)
    if inspect.iscoroutine(func) or inspect.isawaitable(func):
        reject_awaitable(func, "spawn")
    if not callable(func):
        raise TypeError(
            f"spawn() needs a function (async def or plain) as its first "
            f"argument, got {func!r} of type {type(func).__name__}"
        )
    if inspect.isasyncgenfunction(func) or inspect.isgeneratorfunction(func):
        raise TypeError(_generator_message(func))
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - async __call__ instances
    )


def reject_awaitable(
    func: Any, call: str, *, arguments: str = "arg, key=value", why: str = ""
) -> NoReturn:
    """Raise the error for ``call(coro(...))`` instead of ``call(coro, ...)``."""
    close = getattr(func, "close", None)
    if close is not None:
        close()  # avoid a second, less helpful "never awaited" warning
    name = getattr(func, "__qualname__", type(func).__name__)
    raise TypeError(
        f"{call}() takes a function and its arguments, not an awaitable: got "
        f"{func!r}. Write sup.{call}({name}, {arguments}) instead of "
        f"sup.{call}({name}({arguments})){why}"
    )


def _generator_message(func: Callable[..., Any]) -> str:
    return (
        f"{callable_name(func)} is a generator function, which a background task "
        "cannot run to completion; wrap it in a function that consumes it"
    )


def make_coroutine(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Call an async function now, so that bad arguments fail at spawn."""
    try:
        coro = func(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(
            f"cannot spawn {callable_name(func)}: {exc}. {_SPAWN_HINT}"
        ) from exc
    if type(coro) is not CoroutineType and not inspect.isawaitable(coro):
        raise TypeError(
            f"{callable_name(func)} looks async but returned {coro!r}, not a "
            "coroutine; spawn an `async def` function"
        )
    return coro


@functools.lru_cache(maxsize=512)
def _signature(func: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):  # builtins without a signature: skip the check
        return None


def check_sync_arguments(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """Bind the arguments to a plain function's signature without calling it."""
    try:
        signature = _signature(func)
    except TypeError:  # unhashable callable: look it up uncached
        signature = _signature.__wrapped__(func)
    if signature is None:
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(
            f"cannot spawn {callable_name(func)}: {exc}. {_SPAWN_HINT}"
        ) from None


def make_coroutine_fast(
    func: FunctionType, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Call a plain ``async def`` function: it binds the arguments, and can
    return nothing but a coroutine."""
    try:
        return func(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(
            f"cannot spawn {func.__qualname__}: {exc}. {_SPAWN_HINT}"
        ) from exc


def prepare(
    func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], name: str | None
) -> tuple[Any, bool, str]:
    """Check what is spawned: ``(coroutine or None, is_async, task name)``.

    Nothing is scheduled; an ``async def`` function's coroutine is made now,
    so that arguments that do not fit fail here.
    """
    if type(func) is FunctionType and func.__code__.co_flags & CO_COROUTINE:
        coro = make_coroutine_fast(func, args, kwargs)
        return coro, True, name or func.__qualname__
    if is_async_callable(func):
        return make_coroutine(func, args, kwargs), True, name or callable_name(func)
    check_sync_arguments(func, args, kwargs)
    return None, False, name or callable_name(func)
