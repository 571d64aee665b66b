"""The little ASGI plumbing the task page needs: replies, headers, bodies.

Plain ASGI 3 messages, no framework: :mod:`supervisor.web` must not import
one (the core's dependencies are anyio, attrs and structlog).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ._lifespan import Receive, Scope, Send

__all__ = [
    "error",
    "headers_of",
    "read_body",
    "respond",
    "same_origin",
    "serve_lifespan",
    "to_json",
]

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def headers_of(scope: Scope) -> dict[str, str]:
    return {
        k.decode("latin-1").lower(): v.decode("latin-1")
        for k, v in scope.get("headers", ())
    }


def same_origin(headers: dict[str, str]) -> bool:
    """False for a browser request from another site (``Origin`` or Fetch metadata)."""
    if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = headers.get("host")
    return host is not None and origin.split("://", 1)[-1] == host


async def read_body(receive: Receive, *, limit: int) -> bytes:
    body = b""
    while True:  # ends with the last chunk; bounded by the limit
        message = await receive()
        if message["type"] != "http.request":
            return b""
        chunk: bytes = message.get("body", b"")
        body += chunk
        if len(body) > limit:
            return b"!"  # not JSON: refused as a bad body
        if not message.get("more_body", False):
            return body


async def serve_lifespan(receive: Receive, send: Send) -> None:
    """Served on its own, the page has no lifespan work: acknowledge both steps."""
    while True:  # a lifespan has two steps; the second returns
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def to_json(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=True, separators=(",", ":")).encode()


async def error(send: Send, status: int, message: str, *, allow: bytes = b"") -> None:
    headers = [(b"allow", allow)] if allow else []
    await respond(send, status, to_json({"error": message}), headers=headers)


async def respond(
    send: Send,
    status: int,
    body: bytes,
    *,
    content_type: bytes = b"application/json",
    headers: Iterable[tuple[bytes, bytes]] = (),
    head: bool = False,
) -> None:
    """Send one whole response; ``head``: the headers of ``body``, no body (HEAD)."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                (b"x-content-type-options", b"nosniff"),
                (b"content-security-policy", _CSP.encode()),
                (b"referrer-policy", b"no-referrer"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if head else body})
