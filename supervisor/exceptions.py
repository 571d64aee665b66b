"""The exceptions ``supervisor`` raises, all subclasses of :class:`SupervisorError`.

Each one says what happened and what to do about it; catching
:class:`SupervisorError` catches them all. Each also subclasses the nearest
built-in exception (a closed, unstarted or full supervisor is a
``RuntimeError``), so code that already catches that keeps working.
"""

from __future__ import annotations

__all__ = [
    "Overloaded",
    "ServiceFailedToStart",
    "SupervisorClosed",
    "SupervisorError",
    "SupervisorNotStarted",
    "TaskCancelled",
    "TaskFailed",
]


class SupervisorError(Exception):
    """Base class of every error raised by ``supervisor``.

    Raised as itself for misuse: a lifecycle call from the wrong task or in
    the wrong order, a duplicate task id, or several supervisors running where
    the code asked for "the" current one.
    """


class SupervisorClosed(SupervisorError, RuntimeError):
    """A task was spawned after :meth:`Supervisor.shutdown` began.

    Spawn background work before lifespan shutdown; during shutdown the
    supervisor only drains and cancels what it already owns.
    """


class SupervisorNotStarted(SupervisorError, RuntimeError):
    """A task was spawned on a supervisor that has not been started.

    Also raised by :func:`current_supervisor` when no supervisor is running
    in this process. Start one in the application's lifespan
    (``async with sup:`` or ``await sup.startup()``) or use an integration.
    """


class Overloaded(SupervisorError, RuntimeError):
    """``max_pending`` tasks are already waiting and the caller cannot wait.

    Raised by :meth:`Supervisor.spawn_nowait` and
    :meth:`Supervisor.spawn_threadsafe`; :meth:`Supervisor.spawn` waits for
    room instead. Shed the load (e.g. answer 503) or raise the limits.
    """


class ServiceFailedToStart(SupervisorError, RuntimeError):
    """Raised by :meth:`Supervisor.start_service` when a service never got ready.

    The service takes ``task_status`` and its first run crashed, returned, or
    was cancelled before calling ``task_status.started()``. The crash is
    ``__cause__`` (and the service's record ends ``FAILED`` with it). A
    service that cannot start is not restarted: the caller is told instead,
    the way ``TaskGroup.start`` raises the child's error.
    """


class TaskFailed(SupervisorError):
    """Raised by :meth:`BackgroundTask.wait` when the task failed.

    The task's own exception is ``__cause__`` (and :attr:`BackgroundTask.error`).
    """


class TaskCancelled(SupervisorError):
    """Raised by :meth:`BackgroundTask.wait` when the task was cancelled.

    The reason (``"shutdown"``, ``"cancelled by caller"``, ...) is in the
    message and in :attr:`BackgroundTask.cancel_reason`.
    """
