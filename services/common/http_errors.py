"""Every failure a FastAPI service meets, answered in the registry's error envelope.

The gateway, the token service and the search service install these same handlers, so an unknown
route, a wrong method, a request the framework cannot read, a client that left mid-request and an
unhandled exception answer alike everywhere: ``{"errors": [{"code", "message", "detail"}]}`` with a
code of ``services.common.errors``, never FastAPI's ``{"detail": ...}`` or a plain-text 500.

A 500 says only UNKNOWN and the request id: what went wrong inside is for the log (which carries
the same id), not for clients. A service may dress the answer (``render``: the gateway adds
``Allow`` and leaves HEAD bodies out, the token service adds no-store headers and RFC 6749 fields),
but the code, status and detail of each failure are decided here, once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.common import request_ids
from services.common.errors import NOT_FOUND, UNKNOWN, UNSUPPORTED, RegistryError

# Turns an error (already made fit for clients by ``public``) into the response.
Render = Callable[[Request, RegistryError], Response]
# The Allow header of a 405 for a request.
Allow = Callable[[Request], str]

_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def public(error: RegistryError) -> RegistryError:
    """The error as a client may see it: an UNKNOWN 5xx keeps nothing but the request id."""
    if error.code is UNKNOWN and error.status >= 500:
        return RegistryError(
            UNKNOWN, {"request_id": request_ids.current()}, message="internal error", status=error.status, headers=error.headers
        )
    return error


def envelope(error: RegistryError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The envelope with the error's headers (and ``headers``). A Content-Length attached on the
    way (a blob's) is dropped: the error's own body decides the length."""
    merged = {k: v for k, v in {**error.headers, **(headers or {})}.items() if k.lower() != "content-length"}
    return JSONResponse({"errors": [error.to_json()]}, status_code=error.status, headers=merged or None)


def render_envelope(request: Request, error: RegistryError) -> Response:
    """The default ``render``: the envelope as it is."""
    return envelope(error)


def route_methods(request: Request) -> str:
    """The default ``Allow`` of a 405 (RFC 9110 15.5.6): every method some route of the app serves
    at the path. (The router's own header names only the first route whose path matched, so
    ``PUT /token`` would list GET and not POST.)"""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods and route.path_regex.match(request.url.path):
            methods |= route.methods
    ordered = [m for m in _METHOD_ORDER if m in methods]
    return ", ".join(ordered + sorted(methods - set(ordered)))


def from_http_exception(request: Request, exc: StarletteHTTPException, allow: Allow = route_methods) -> RegistryError:
    """What the router's own refusals (no route, wrong method) are in the registry's codes."""
    if exc.status_code == 404:
        return RegistryError(NOT_FOUND, {"path": request.url.path[:300]})
    if exc.status_code == 405:
        return RegistryError(UNSUPPORTED, {"method": request.method[:40]}, headers={"Allow": allow(request)})
    return RegistryError(UNKNOWN, message=str(exc.detail), status=exc.status_code, headers=dict(exc.headers) if exc.headers else None)


def install(app: FastAPI, service: str, *, render: Render = render_envelope, allow: Allow = route_methods) -> None:
    """Installs the handlers on ``app``; ``service`` names the logger (``berth.<service>``).

    ``allow``: the ``Allow`` header of a 405 the router raises (the gateway's knows its prefix and
    read-only mode)."""
    log = logging.getLogger(f"berth.{service}")

    def answer(request: Request, error: RegistryError) -> Response:
        return render(request, public(error))

    async def registry_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RegistryError)
        return answer(request, exc)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return answer(request, from_http_exception(request, exc, allow))

    async def validation_error(request: Request, exc: Exception) -> Response:
        return answer(request, RegistryError(UNSUPPORTED, {"reason": "malformed request"}, status=400))

    async def client_disconnected(request: Request, exc: Exception) -> Response:
        # The client went away mid-request: nothing went wrong here, and no one is left to tell.
        log.info("client disconnected during %s %s", request.method, request.url.path)
        return answer(request, RegistryError(UNSUPPORTED, {"reason": "client disconnected"}, status=400))

    async def unhandled(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return answer(request, RegistryError(UNKNOWN))

    app.add_exception_handler(RegistryError, registry_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(ClientDisconnect, client_disconnected)
    app.add_exception_handler(Exception, unhandled)
