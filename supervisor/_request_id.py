"""A request id on every log line of a request and of the tasks it spawns.

:class:`RequestIdMiddleware` (re-exported as
``supervisor.asgi.RequestIdMiddleware``) is plain ASGI and imports no web
framework. For each ``http`` and ``websocket`` connection it takes the id
from the ``X-Request-ID`` header when that is well formed, or makes one,
and binds it with :func:`structlog.contextvars.bound_contextvars` for the
length of the call. Background tasks run in a copy of their spawner's
context, so every line a task logs (``task:failed`` included) carries the
request's id, and ``python -m supervisor failures`` lists the ids of the
requests behind each group of failures.

Why the id from the client is checked: it ends up in every log line, so a
client must not be able to put newlines, quotes or a megabyte into them. An
id is accepted when it is 1 to ``max_length`` (default 128) characters out
of letters, digits and ``-_.:+/=`` (uuids, ULIDs, hex and base64 trace ids
pass); anything else is replaced by a fresh id (32 hex digits, a uuid4), as
is a missing header. The id is sent back in the response's ``X-Request-ID``
header so the client can quote it.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterable

import attrs
import structlog

from ._lifespan import ASGIApp, Message, Receive, Scope, Send

__all__ = ["RequestIdMiddleware", "RequestIds", "accept_request_id", "new_request_id"]

#: Characters allowed in a request id taken from a client.
_WELL_FORMED = re.compile(r"[A-Za-z0-9\-_.:+/=]+")
# An HTTP header name (a token, RFC 9110), which is what the option must be.
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_LENGTH_CAP = 1024


def new_request_id() -> str:
    """A fresh request id: 32 hex digits (a random uuid4)."""
    return uuid.uuid4().hex


def accept_request_id(value: str | bytes | None, max_length: int = 128) -> str | None:
    """``value`` as a request id if it is well formed, else None.

    Well formed: 1 to ``max_length`` characters out of letters, digits and
    ``-_.:+/=``. Bytes (ASGI header values) are decoded as ASCII.
    """
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    if value is None or len(value) > max_length:
        return None
    if _WELL_FORMED.fullmatch(value) is None:
        return None
    return value


@attrs.frozen
class RequestIds:
    """Where a request's id comes from and what it is bound as; checked once.

    Shared by the ASGI middleware here and QakeAPI's, which sees qakeapi
    request objects rather than ASGI calls.
    """

    header: str
    key: str
    max_length: int
    #: ``header`` as ASGI spells header names: lower-case bytes.
    name: bytes = attrs.field(init=False)

    @classmethod
    def checked(cls, header: object, key: object, max_length: object) -> RequestIds:
        if not isinstance(header, str) or _HEADER_NAME.fullmatch(header) is None:
            raise ValueError(
                f"header must be an HTTP header name such as 'X-Request-ID', got "
                f"{header!r}"
            )
        if not isinstance(key, str) or _KEY.fullmatch(key) is None:
            raise ValueError(
                "key must be a Python identifier to bind the id under, such as "
                f"'request_id', got {key!r}"
            )
        if (
            isinstance(max_length, bool)
            or not isinstance(max_length, int)
            or not 1 <= max_length <= _MAX_LENGTH_CAP
        ):
            raise ValueError(
                f"max_length must be an int from 1 to {_MAX_LENGTH_CAP} (characters "
                f"of a client's request id), got {max_length!r}"
            )
        return cls(header, key, max_length)

    @name.default
    def _name(self) -> bytes:
        return self.header.lower().encode("ascii")

    def for_headers(self, headers: Iterable[tuple[bytes, bytes]]) -> str:
        """The id for a request with these (ASGI, lower-cased) headers."""
        for name, value in headers:
            if name == self.name:
                accepted = accept_request_id(value, self.max_length)
                return new_request_id() if accepted is None else accepted
        return new_request_id()

    def bound(self, request_id: str) -> contextlib.AbstractContextManager[None]:
        """Bind ``request_id`` for the log lines inside the ``with`` block."""
        return structlog.contextvars.bound_contextvars(**{self.key: request_id})


class RequestIdMiddleware:
    """ASGI middleware that binds a request id to the log lines of each request.

    ``header`` is the request (and response) header that carries the id;
    ``key`` the name it is bound under with :mod:`structlog.contextvars`
    (your processors must include
    :func:`structlog.contextvars.merge_contextvars`, as
    :func:`supervisor.logs.configure_logging` does); ``max_length`` the
    longest id taken from a client; ``response_header`` whether to send the
    id back in the response. See the module docstring for what is accepted.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        header: str = "X-Request-ID",
        key: str = "request_id",
        max_length: int = 128,
        response_header: bool = True,
    ) -> None:
        if not callable(app):
            raise TypeError(f"RequestIdMiddleware wraps an ASGI app, got {app!r}")
        if not isinstance(response_header, bool):
            raise TypeError(f"response_header must be a bool, got {response_header!r}")
        self.app = app
        self.ids = RequestIds.checked(header, key, max_length)
        self.response_header = response_header

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = self.ids.for_headers(scope.get("headers") or ())
        if kind == "http" and self.response_header:
            send = self._echoing(send, request_id)
        with self.ids.bound(request_id):
            await self.app(scope, receive, send)

    def _echoing(self, send: Send, request_id: str) -> Send:
        """``send``, adding the id to the response's headers unless the app did."""
        name, value = self.ids.name, request_id.encode("ascii")

        async def send_with_id(message: Message) -> None:
            if message.get("type") == "http.response.start":
                headers = list(message.get("headers") or ())
                if not any(key.lower() == name for key, _ in headers):
                    headers.append((name, value))
                    message = {**message, "headers": headers}
            await send(message)

        return send_with_id

    def __repr__(self) -> str:
        return (
            f"<supervisor.asgi.RequestIdMiddleware header={self.ids.header!r} "
            f"key={self.ids.key!r} app={self.app!r}>"
        )
