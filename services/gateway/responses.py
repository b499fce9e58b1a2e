"""Turns every failure into the registry's JSON error envelope; no handler formats errors itself."""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response

from services.common import request_ids
from services.common.errors import BLOB_UPLOAD_INVALID, NOT_FOUND, UNKNOWN, UNSUPPORTED, RegistryError
from services.gateway import readonly, routes, state

log = logging.getLogger("berth.gateway")


_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _allow(request: Request) -> str:
    """What a 405 must list (RFC 9110 15.5.6): the methods the path serves, bar the one refused
    (and bar every write in read-only mode: possibly none at all, which an empty Allow says)."""
    settings = state.of(request).settings
    methods = routes.allowed_methods(request.url.path, settings.http.prefix) - {request.method}
    if settings.storage.maintenance.readonly.enabled:
        methods &= readonly.READS
    return ", ".join(m for m in _METHOD_ORDER if m in methods)


def error_response(error: RegistryError, request: Request | None = None) -> Response:
    # The error's own body decides the length, whatever headers were attached on the way.
    headers = {k: v for k, v in error.headers.items() if k.lower() != "content-length"}
    if error.code is UNKNOWN and error.status >= 500:
        # What went wrong inside is for the log (which carries the same request id), not for clients.
        error = RegistryError(UNKNOWN, {"request_id": request_ids.current()}, message="internal error", status=error.status)
    if error.status == 405 and request is not None and not any(k.lower() == "allow" for k in headers):
        headers["Allow"] = _allow(request)
    if request is not None and request.method == "HEAD":
        # HEAD carries no body; the status and headers say it all.
        return Response(status_code=error.status, headers=headers)
    return JSONResponse({"errors": [error.to_json()]}, status_code=error.status, headers=headers)


async def _registry_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RegistryError)
    return error_response(exc, request)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        err = RegistryError(UNSUPPORTED, {"method": request.method})
    elif exc.status_code == 404:
        err = RegistryError(NOT_FOUND, {"path": request.url.path[:300]})
    else:
        err = RegistryError(UNKNOWN, message=str(exc.detail), status=exc.status_code)
    return error_response(err, request)


async def _validation_error(request: Request, exc: Exception) -> Response:
    return error_response(RegistryError(UNSUPPORTED, {"reason": "malformed request"}, status=400), request)


async def _client_disconnected(request: Request, exc: Exception) -> Response:
    # The client went away mid-request: nothing to tell it, and nothing went wrong here.
    log.info("client disconnected during %s %s", request.method, request.url.path)
    return error_response(RegistryError(BLOB_UPLOAD_INVALID, {"reason": "client disconnected"}), request)


async def _unhandled(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(RegistryError(UNKNOWN), request)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RegistryError, _registry_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ClientDisconnect, _client_disconnected)
    app.add_exception_handler(Exception, _unhandled)
