"""How the gateway dresses the registry's error envelope: ``Allow`` on a 405, no body for HEAD.

Which code, status and detail a failure answers with is ``services.common.http_errors``'s to say,
for every service alike; this module only adds what the distribution spec asks of the gateway.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import Response

from services.common import http_errors
from services.common.errors import RegistryError
from services.gateway import app_state, readonly, routes

_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _allow(request: Request) -> str:
    """What a 405 must list (RFC 9110 15.5.6): the methods the path serves, bar the one refused
    (and bar every write in read-only mode: possibly none at all, which an empty Allow says)."""
    settings = app_state.of(request).settings
    methods = routes.allowed_methods(request.url.path, settings.http.prefix) - {request.method}
    if settings.storage.maintenance.readonly.enabled:
        methods &= readonly.READS
    return ", ".join(m for m in _METHOD_ORDER if m in methods)


def error_response(request: Request, error: RegistryError) -> Response:
    """The gateway's ``render`` (``error`` is already fit for clients: ``http_errors.public``)."""
    extra: dict[str, str] = {}
    if error.status == 405 and not any(k.lower() == "allow" for k in error.headers):
        extra["Allow"] = _allow(request)
    if request.method == "HEAD":
        # HEAD carries no body; the status and headers say it all.
        headers = {k: v for k, v in {**error.headers, **extra}.items() if k.lower() != "content-length"}
        return Response(status_code=error.status, headers=headers)
    return http_errors.envelope(error, extra)


def install(app: FastAPI) -> None:
    http_errors.install(app, "gateway", render=error_response, allow=_allow)
