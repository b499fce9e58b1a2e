"""The referrers API: ``/v2/<name>/referrers/<digest>``, always an image index."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from services.common import digests, names
from services.gateway import app_state
from services.gateway.manifest_validation import OCI_INDEX

router = APIRouter()


@router.api_route("/v2/{name:path}/referrers/{digest}", methods=["GET", "HEAD"])
async def list_referrers(request: Request, name: str, digest: str) -> Response:
    names.check_name(name)
    digests.parse(digest)
    entries = [json.loads(raw) for raw in await app_state.of(request).blobstore.list_referrers(name, digest)]
    headers = {}
    wanted = request.query_params.get("artifactType")
    if wanted:
        entries = [e for e in entries if e.get("artifactType") == wanted]
        headers["OCI-Filters-Applied"] = "artifactType"
    entries.sort(key=lambda e: e["digest"])
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    return JSONResponse(index, media_type=OCI_INDEX, headers=headers)
