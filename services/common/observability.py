"""What every FastAPI service installs to be observable: request ids, and with ``metrics.enabled``
the per-route HTTP metrics and ``GET /metrics``.

``/metrics`` is served at the root, outside any prefix and any access check (scrapers carry no
registry credentials). The middlewares go outermost, so they see every answer, errors included.
"""
from __future__ import annotations

from starlette.applications import Starlette

from services.common.config import Settings
from services.common.http_metrics import HTTPMetrics, metrics_page
from services.common.request_id_http import RequestIdMiddleware

METRICS_PATH = "/metrics"


def install(app: Starlette, service: str, settings: Settings) -> None:
    """Call last in ``create_app``: middlewares added later would sit outside these."""
    if settings.metrics.enabled:
        app.add_route(METRICS_PATH, metrics_page, methods=["GET"], include_in_schema=False)
        app.add_middleware(HTTPMetrics, service=service)
    app.add_middleware(RequestIdMiddleware)
