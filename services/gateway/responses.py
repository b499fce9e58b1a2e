"""Turns every failure into the registry's JSON error envelope; no handler formats errors itself."""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from services.common.errors import NOT_FOUND, UNKNOWN, UNSUPPORTED, RegistryError

log = logging.getLogger("berth.gateway")


def error_response(error: RegistryError, request: Request | None = None) -> Response:
    headers = dict(error.headers)
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


async def _unhandled(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(RegistryError(UNKNOWN), request)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RegistryError, _registry_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unhandled)
