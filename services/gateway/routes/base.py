"""The ``/v2/`` version check. (``/``, ``/_ping`` and ``/_ready`` are the health routes of
``services/common/health.py``, installed before these.)"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import JSONResponse, Response

router = APIRouter()


@router.api_route("/v2/", methods=["GET", "HEAD"])
async def version_check() -> Response:
    return JSONResponse({})
