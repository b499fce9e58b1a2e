"""The request id over HTTP: taken from (or made for) each incoming request and echoed back, and
sent along on the calls a service makes while it handles one, so the services' logs line up.

The middleware sets the id for the request's task and leaves it set: uvicorn serves each request
in a task of its own, and its "Exception in ASGI application" line, written after the app has
returned, then still carries the id.
"""

from __future__ import annotations

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common import request_ids

_KEY = request_ids.HEADER.lower().encode()


class RequestIdMiddleware:
    """Adopts ``X-Request-Id`` (or makes one) and adds it to the response. Plain ASGI, so streamed
    bodies pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for key, value in scope["headers"]:
            if key == _KEY:
                incoming = value.decode("latin-1")
                break
        header = (_KEY, request_ids.adopt(incoming).encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.app(scope, receive, send_with_id)


async def send_request_id(request: httpx.Request) -> None:
    """An httpx request hook: the current request id goes along as ``X-Request-Id``."""
    current = request_ids.current()
    if current:
        request.headers[request_ids.HEADER] = current
