"""Blob reads and deletes: ``/v2/<name>/blobs/<digest>``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from services.common import digests, names
from services.common.errors import BLOB_UNKNOWN, NAME_UNKNOWN, UNSUPPORTED, RegistryError
from services.common.ranges import parse_range
from services.gateway import app_state
from services.gateway.events import emit
from services.gateway.proxy.upstream import Upstream

router = APIRouter()


def _blob_headers(digest: str, length: int) -> dict[str, str]:
    """A blob's headers; no Content-Length when the length is unknown (-1: an upstream that did not say)."""
    headers = {
        "Content-Type": "application/octet-stream",
        "Docker-Content-Digest": digest,
        "ETag": f'"{digest}"',
        "Accept-Ranges": "bytes",
        "Cache-Control": "max-age=31536000",
    }
    if length >= 0:
        headers["Content-Length"] = str(length)
    return headers


def _upstream(gw: app_state.GatewayState, name: str, exc: RegistryError) -> Upstream | None:
    """The upstream that can supply a blob the store lacks, when the repository is mirrored."""
    if gw.mirror is None or exc.code not in (BLOB_UNKNOWN, NAME_UNKNOWN):
        return None
    return gw.mirror.upstream_for(name)


@router.head("/v2/{name:path}/blobs/{digest}")
async def head_blob(request: Request, name: str, digest: str) -> Response:
    names.check_name(name)
    digests.parse(digest)
    gw = app_state.of(request)
    try:
        size = (await gw.blobstore.stat_blob(name, digest)).size
    except RegistryError as exc:
        upstream = _upstream(gw, name, exc)
        if upstream is None:
            raise
        size = await gw.mirror.blob_size(upstream, name, digest)  # type: ignore[union-attr]
    return Response(status_code=200, headers=_blob_headers(digest, size))


@router.get("/v2/{name:path}/blobs/{digest}")
async def get_blob(request: Request, name: str, digest: str) -> Response:
    names.check_name(name)
    digests.parse(digest)
    gw = app_state.of(request)
    try:
        response = await _serve(request, gw, name, digest)
    except RegistryError as exc:
        upstream = _upstream(gw, name, exc)
        if upstream is None:
            raise
        # Not cached: fetched once however many clients ask; the first streams it as it arrives.
        fetched = await gw.mirror.fetch_blob(upstream, name, digest, follow="range" not in request.headers)  # type: ignore[union-attr]
        if fetched is None:  # stored meanwhile (or a ranged read): served from the store
            return await _serve(request, gw, name, digest)
        size, chunks = fetched
        return StreamingResponse(chunks, status_code=200, headers=_blob_headers(digest, size))
    if gw.mirror is not None and (upstream := gw.mirror.upstream_for(name)) is not None:
        await gw.mirror.touch(upstream, name, blobs=(digest,))
    return response


async def _serve(request: Request, gw: app_state.GatewayState, name: str, digest: str) -> Response:
    client = gw.blobstore
    if "range" not in request.headers:
        # One short call says how: the store serves the bytes itself when it can sign a URL (s3's
        # presigned URLs, or the blobstore's own listener with blobstore.public_url); a small blob
        # comes in the answer; a large one is streamed.
        opened = await client.open_blob(name, digest, "GET" if gw.redirects else "", gw.settings.blobstore.chunk_size)
        if opened.url:
            return Response(status_code=307, headers={"Location": opened.url, "Docker-Content-Digest": digest, "Content-Length": "0"})
        if opened.urls_unsupported:
            gw.redirects = False  # the store has no URLs: stop asking
        if opened.inline:
            return Response(opened.data, status_code=200, headers=_blob_headers(digest, opened.size))
        wanted = None
    else:
        wanted = parse_range(request.headers["range"], (await client.stat_blob(name, digest)).size)
    if wanted is None:
        stream = await client.read_blob(name, digest)
        return StreamingResponse(stream.chunks, status_code=200, headers=_blob_headers(digest, stream.size))
    offset, length = wanted
    stream = await client.read_blob(name, digest, offset, length)
    headers = _blob_headers(digest, length)
    headers["Content-Range"] = f"bytes {offset}-{offset + length - 1}/{stream.size}"
    return StreamingResponse(stream.chunks, status_code=206, headers=headers)


@router.delete("/v2/{name:path}/blobs/{digest}")
async def delete_blob(request: Request, name: str, digest: str) -> Response:
    names.check_name(name)
    digests.parse(digest)
    gw = app_state.of(request)
    if not gw.deletes_enabled:
        raise RegistryError(UNSUPPORTED, {"reason": "deletes are disabled (storage.delete.enabled)"})
    await gw.blobstore.delete_blob(name, digest)
    emit.blob_deleted(request, name, digest)
    return Response(status_code=202, headers={"Content-Length": "0"})
