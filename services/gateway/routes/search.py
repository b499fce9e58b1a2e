"""``GET /v1/search``: Docker Hub's v1 search, answered by the search service.

The gateway only forwards the query and filters the answer through ``visible``, the one place that
decides which repositories a caller may see in results.
"""
from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from services.common import search_query
from services.common.errors import UNSUPPORTED, RegistryError
from services.gateway import access, state

router = APIRouter()


async def visible(request: Request, names: list[str]) -> set[str]:
    """The names among ``names`` the caller may see: those its identity may pull."""
    return await state.of(request).access.pullable(access.identity_of(request), names)


@router.get("/v1/search")
async def search(request: Request) -> Response:
    query = search_query.parse(request.query_params)
    answer = await state.of(request).search.search(query)
    results = answer["results"]
    allowed = await visible(request, [str(r.get("name", "")) for r in results if isinstance(r, dict)])
    kept = [r for r in results if isinstance(r, dict) and r.get("name") in allowed]
    # Hidden results leave the page shorter; the total shrinks by what this page lost.
    answer["num_results"] = max(0, int(answer["num_results"]) - (len(results) - len(kept)))
    answer["results"] = kept
    return JSONResponse(answer)


@router.api_route("/v1/search", methods=["HEAD", "POST", "PUT", "PATCH", "DELETE"])
async def other_methods(request: Request) -> Response:
    raise RegistryError(UNSUPPORTED, {"method": request.method}, headers={"Allow": "GET"})
