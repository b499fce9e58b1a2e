"""What every FastAPI service installs to be observable (``install``): request ids, and with
``metrics.enabled`` the per-route HTTP metrics and ``GET /metrics``. The metrics themselves are
defined in ``services.common.metrics``; this is where HTTP requests are recorded into them (gRPC
calls are recorded by ``services.blobstore.grpc_instrumentation`` and, on the calling side,
``services.gateway.blobstore_client``).

``/metrics`` is served at the root, outside any prefix and any access check (scrapers carry no
registry credentials). The middlewares wrap the whole application, Starlette's own error layer
included, so they see every answer: a 500 for an unhandled exception is counted and carries its
``X-Request-Id`` like any other (``add_middleware`` would put them inside that layer).

Requests are labelled by the matched route's template (``/v2/{name:path}/blobs/{digest}``), never
the raw path, so the number of series stays bounded whatever clients send; no route is
``unmatched``. The middleware is plain ASGI (streamed bodies pass through untouched, one cheap
wrapper per message) and keeps the label children it has used, so a request costs a dict lookup
and four updates rather than four label resolutions.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.config import Settings
from services.common.metrics import HTTP_BYTES_IN, HTTP_BYTES_OUT, HTTP_DURATION, HTTP_REQUESTS
from services.common.request_id_http import RequestIdMiddleware

METRICS_PATH = "/metrics"
UNMATCHED = "unmatched"
# Other methods share one label, so made-up methods cannot grow the series.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def install(app: Starlette, service: str, settings: Settings) -> None:
    """Wraps ``app`` in the request id middleware and, with ``metrics.enabled``, ``HTTPMetrics``,
    outside Starlette's error layer; adds ``GET /metrics``."""
    if settings.metrics.enabled:
        app.add_route(METRICS_PATH, metrics_page, methods=["GET"], include_in_schema=False)
    build_inner = app.build_middleware_stack

    def build_outermost() -> ASGIApp:
        stack = build_inner()
        if settings.metrics.enabled:
            stack = HTTPMetrics(stack, service=service)
        return RequestIdMiddleware(stack)

    app.build_middleware_stack = build_outermost  # type: ignore[method-assign]


class HTTPMetrics:
    """The ASGI middleware that records every request into the ``HTTP_*`` metrics."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service
        self._children: dict[tuple[str, str, int], tuple[Any, Any, Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        # What the server answers when the app fails before starting a response.
        status = 500
        received = sent = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            body = message.get("body")
            if body:
                received += len(body)
            return message

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.body":
                body = message.get("body")
                if body:
                    sent += len(body)
            elif message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            route = scope.get("route")
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"  # clients make methods up
            key = (method, getattr(route, "path", UNMATCHED) if route is not None else UNMATCHED, status)
            children = self._children.get(key) or self._bind(key)
            requests, duration, bytes_in, bytes_out = children
            requests.inc()
            duration.observe(time.perf_counter() - start)
            if received:
                bytes_in.inc(received)
            if sent:
                bytes_out.inc(sent)

    def _bind(self, key: tuple[str, str, int]) -> tuple[Any, Any, Any, Any]:
        method, route, status = key
        children = (
            HTTP_REQUESTS.labels(self.service, method, route, str(status)),
            HTTP_DURATION.labels(self.service, method, route),
            HTTP_BYTES_IN.labels(self.service, route),
            HTTP_BYTES_OUT.labels(self.service, route),
        )
        self._children[key] = children
        return children


async def metrics_page(request: Request) -> Response:
    """The process's metrics in the exposition format the scraper asks for (text or OpenMetrics)."""
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(REGISTRY), headers={"Content-Type": content_type})
