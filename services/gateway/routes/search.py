"""``GET /v1/search``: Docker Hub's v1 search, answered by the search service.

The gateway forwards the query and filters the answer through ``visible``, the one place that
decides which repositories a caller may see in results. Counts and pages are those of what the
caller sees, never of the whole index: a caller who may pull every repository (auth none, a
signed-in htpasswd user) gets the search service's answer as it is, one who may pull none (an
anonymous htpasswd caller) an empty one without asking, and anyone else (token auth) the matches
read best first in batches, each batch filtered, and the page cut from what is left. So
``num_results`` and ``num_pages`` count repositories the caller may pull, and page n is page n of
those. At most ``MAX_SCANNED`` matches are read per search: beyond that many a broad query counts
(and pages through) what the caller may pull among the best ``MAX_SCANNED`` matches only.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from services.common import search_query
from services.common.errors import UNSUPPORTED, RegistryError
from services.common.search_query import SearchQuery
from services.gateway import access, app_state

router = APIRouter()

# Matches read per request to the search service while filtering (its largest page).
BATCH = search_query.MAX_PAGE_SIZE
# Most matches read for one filtered search (a bound on what one anonymous request may cost).
MAX_SCANNED = 10_000
# Batches read and filtered at once.
CONCURRENCY = 4


async def visible(request: Request, names: list[str]) -> set[str]:
    """The names among ``names`` the caller may see: those its identity may pull."""
    return await app_state.of(request).access.pullable(access.identity_of(request), names)


@router.get("/v1/search")
async def search(request: Request) -> Response:
    query = search_query.parse(request.query_params)
    gateway = app_state.of(request)
    reach = gateway.access.reach(access.identity_of(request))
    if reach == "all":
        return JSONResponse(await gateway.search.search(query))
    if reach == "none":
        return JSONResponse(search_query.answer(query, 0, []))
    seen = await visible_matches(request, query.q)
    return JSONResponse(search_query.answer(query, len(seen), seen[query.offset : query.offset + query.n]))


async def visible_matches(request: Request, q: str) -> list[dict[str, Any]]:
    """Every match of ``q`` the caller may see (up to ``MAX_SCANNED`` read), best first."""
    search = app_state.of(request).search

    async def batch(page: int) -> tuple[int, list[dict[str, Any]]]:
        answer = await search.search(SearchQuery(q, BATCH, page))
        results = [r for r in answer["results"] if isinstance(r, dict) and isinstance(r.get("name"), str)]
        allowed = await visible(request, [r["name"] for r in results])
        return int(answer["num_results"]), [r for r in results if r["name"] in allowed]

    total, kept = await batch(1)
    pages = (min(total, MAX_SCANNED) + BATCH - 1) // BATCH
    limit = asyncio.Semaphore(CONCURRENCY)

    async def bounded(page: int) -> tuple[int, list[dict[str, Any]]]:
        async with limit:
            return await batch(page)

    tasks = [asyncio.ensure_future(bounded(page)) for page in range(2, pages + 1)]
    try:
        for _, more in await asyncio.gather(*tasks):
            kept += more
    except BaseException:  # one failing batch (503 from either service) ends the others
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    # The index may change between batches (a push moves a name to another page): each name once.
    unique: dict[str, dict[str, Any]] = {}
    for result in kept:
        unique.setdefault(result["name"], result)
    return list(unique.values())


@router.api_route("/v1/search", methods=["HEAD", "POST", "PUT", "PATCH", "DELETE"])
async def other_methods(request: Request) -> Response:
    raise RegistryError(UNSUPPORTED, {"method": request.method}, headers={"Allow": "GET"})
