"""What every FastAPI service installs to be observable: request ids, and with ``metrics.enabled``
the per-route HTTP metrics and ``GET /metrics``.

``/metrics`` is served at the root, outside any prefix and any access check (scrapers carry no
registry credentials). The middlewares wrap the whole application, Starlette's own error layer
included, so they see every answer: a 500 for an unhandled exception is counted and carries its
``X-Request-Id`` like any other (``add_middleware`` would put them inside that layer).
"""
from __future__ import annotations

from starlette.applications import Starlette
from starlette.types import ASGIApp

from services.common.config import Settings
from services.common.http_metrics import HTTPMetrics, metrics_page
from services.common.request_id_http import RequestIdMiddleware

METRICS_PATH = "/metrics"


def install(app: Starlette, service: str, settings: Settings) -> None:
    if settings.metrics.enabled:
        app.add_route(METRICS_PATH, metrics_page, methods=["GET"], include_in_schema=False)
    build_inner = app.build_middleware_stack

    def build_outermost() -> ASGIApp:
        stack = build_inner()
        if settings.metrics.enabled:
            stack = HTTPMetrics(stack, service=service)
        return RequestIdMiddleware(stack)

    app.build_middleware_stack = build_outermost  # type: ignore[method-assign]
