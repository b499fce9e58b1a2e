"""``/``, ``/_ping`` and the ``/v2/`` version check."""
from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import JSONResponse, Response

router = APIRouter()


@router.get("/")
async def root() -> Response:
    return JSONResponse({"name": "berth", "api": "/v2/"})


@router.get("/_ping")
@router.get("/v1/_ping")
async def ping() -> Response:
    return JSONResponse(True)


@router.api_route("/v2/", methods=["GET", "HEAD"])
async def version_check() -> Response:
    return JSONResponse({})
