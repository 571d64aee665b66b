"""The one JSON reply the plain-ASGI test apps send (imported from ``apps/``)."""

from __future__ import annotations

import json
from typing import Any

from supervisor.asgi import Send


async def respond(send: Send, status: int, body: dict[str, Any]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})
