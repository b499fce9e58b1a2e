"""Listings: tags of a repository and the catalog of repositories, paginated."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from services.common import names
from services.gateway import app_state
from services.gateway.pagination import link_header, page_request

router = APIRouter()

# The catalog answers in pages of this size unless the client asks for another.
CATALOG_DEFAULT_PAGE = 100


@router.api_route("/v2/{name:path}/tags/list", methods=["GET", "HEAD"])
async def list_tags(request: Request, name: str) -> Response:
    names.check_name(name)
    gw = app_state.of(request)
    page = page_request(request, None)
    # n=0 still answers NAME_UNKNOWN for a repository that does not exist (the blobstore raises it).
    found = await gw.blobstore.list_tags(name, page.last, page.limit if page.n != 0 else 1)
    if page.n == 0:
        return JSONResponse({"name": name, "tags": []})
    tags = list(found.names)
    headers = link_header(gw.urls.path(name, "tags", "list"), tags, page) if found.more and tags else {}
    return JSONResponse({"name": name, "tags": tags}, headers=headers)


@router.api_route("/v2/_catalog", methods=["GET", "HEAD"])
async def catalog(request: Request) -> Response:
    gw = app_state.of(request)
    page = page_request(request, CATALOG_DEFAULT_PAGE)
    if page.n == 0:
        return JSONResponse({"repositories": []})
    found = await gw.blobstore.list_repositories(page.last, page.limit)
    repositories = list(found.names)
    headers = link_header(gw.urls.path("_catalog"), repositories, page) if found.more and repositories else {}
    return JSONResponse({"repositories": repositories}, headers=headers)
