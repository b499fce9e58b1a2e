"""Blob uploads: ``/v2/<name>/blobs/uploads/[<id>]`` — monolithic, chunked, resumable, mounts.

Bytes are never held whole: the request body is re-cut into chunk-size messages and streamed to
the blobstore, which hashes and verifies them.
"""
from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from starlette.responses import Response

from services.common import digests, names
from services.common.errors import BLOB_UNKNOWN, DIGEST_INVALID, RANGE_INVALID, SIZE_INVALID, RegistryError
from services.common.rpc import blobstore_pb2 as pb
from services.gateway import state
from services.gateway.events import emit
from services.gateway.ranges import parse_content_range
from services.gateway.state import GatewayState

router = APIRouter()

# Larger than any real blob, small enough to stay a sane integer everywhere.
MAX_CONTENT_LENGTH = 1 << 50


def _content_length(request: Request) -> int | None:
    """The declared body length; SIZE_INVALID for negative or absurd values."""
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    raw = raw.strip()
    if not raw.isdigit() or len(raw) > 16 or int(raw) > MAX_CONTENT_LENGTH:
        raise RegistryError(SIZE_INVALID, {"content-length": raw[:40]})
    return int(raw)


def _has_body(request: Request, length: int | None) -> bool:
    return bool(length) or "chunked" in request.headers.get("transfer-encoding", "").lower()


async def _chunks(request: Request, size: int) -> AsyncIterator[bytes]:
    """The request body in pieces of about ``size`` bytes."""
    buffer = bytearray()
    async for piece in request.stream():
        buffer += piece
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


def _progress_headers(gw: GatewayState, request: Request, name: str, upload_id: str, size: int) -> dict[str, str]:
    """Where an upload stands. No Content-Length: these headers also go on 204s (which must not
    carry one) and on 416 errors (whose JSON body has its own)."""
    return {
        "Location": gw.urls.upload(request, name, upload_id, gw.signer.pack(name, upload_id, size)),
        "Range": f"0-{max(size - 1, 0)}",
        "Docker-Upload-UUID": upload_id,
    }


def _created(gw: GatewayState, request: Request, name: str, digest: str) -> Response:
    return Response(
        status_code=201,
        headers={
            "Location": gw.urls.blob(request, name, digest),
            "Docker-Content-Digest": digest,
            "Content-Length": "0",
        },
    )


def _digest_param(request: Request) -> str:
    digest = request.query_params.get("digest")
    if not digest:
        raise RegistryError(DIGEST_INVALID, {"reason": "the digest query parameter is required"})
    digests.parse(digest)
    return digest


@router.post("/v2/{name:path}/blobs/uploads/")
async def start_upload(request: Request, name: str) -> Response:
    names.check_name(name)
    gw = state.of(request)
    params = request.query_params
    length = _content_length(request)

    mount = params.get("mount")
    if mount:
        digests.parse(mount)
        source = params.get("from", "")
        if source:
            names.check_name(source)
        try:
            mounted = await gw.blobstore.mount_blob(name, mount, source)
            emit.blob_mounted(request, name, mount, mounted.size, source)
            return _created(gw, request, name, mount)
        except RegistryError as exc:
            if exc.code is not BLOB_UNKNOWN:
                raise
        # Not mountable: start an ordinary upload, as the spec asks (202).

    elif "digest" in params:
        digest = _digest_param(request)
        info = await gw.blobstore.write_upload(
            name, "", 0, _chunks(request, gw.settings.blobstore.chunk_size),
            commit_digest=digest, expected_length=-1 if length is None else length,
        )
        emit.blob_pushed(request, name, info.digest, info.size)
        return _created(gw, request, name, info.digest)

    info = await gw.blobstore.start_upload(name)
    return Response(status_code=202, headers=_progress_headers(gw, request, name, info.upload_id, 0))


async def _checked_upload(request: Request, name: str, upload_id: str) -> GatewayState:
    names.check_name(name)
    gw = state.of(request)
    gw.signer.check(request.query_params.get("_state"), name, upload_id)
    return gw


@router.get("/v2/{name:path}/blobs/uploads/{upload_id}")
async def upload_status(request: Request, name: str, upload_id: str) -> Response:
    gw = await _checked_upload(request, name, upload_id)
    info = await gw.blobstore.upload_status(name, upload_id)
    return Response(status_code=204, headers=_progress_headers(gw, request, name, upload_id, info.size))


def _chunk_bounds(request: Request) -> tuple[int, int]:
    """(offset, length) of the chunk in the body: -1 where the client did not say."""
    length = _content_length(request)
    span = parse_content_range(request.headers.get("content-range"))
    if span is None:
        return -1, -1 if length is None else length
    expected = span[1] - span[0] + 1
    if length is not None and length != expected:
        raise RegistryError(RANGE_INVALID, {"reason": "Content-Range and Content-Length disagree"})
    return span[0], expected


async def _write_chunk(gw: GatewayState, request: Request, name: str, upload_id: str, commit_digest: str = "") -> pb.UploadInfo:
    """Streams the body into the upload; a chunk at the wrong offset (416) says where to resume."""
    offset, expected = _chunk_bounds(request)
    try:
        return await gw.blobstore.write_upload(
            name, upload_id, offset, _chunks(request, gw.settings.blobstore.chunk_size),
            commit_digest=commit_digest, expected_length=expected,
        )
    except RegistryError as exc:
        if exc.code is RANGE_INVALID and isinstance(exc.detail, dict) and "size" in exc.detail:
            exc.headers.update(_progress_headers(gw, request, name, upload_id, int(exc.detail["size"])))
        raise


@router.patch("/v2/{name:path}/blobs/uploads/{upload_id}")
async def upload_chunk(request: Request, name: str, upload_id: str) -> Response:
    gw = await _checked_upload(request, name, upload_id)
    info = await _write_chunk(gw, request, name, upload_id)
    return Response(status_code=202, headers=_progress_headers(gw, request, name, upload_id, info.size))


@router.put("/v2/{name:path}/blobs/uploads/{upload_id}")
async def finish_upload(request: Request, name: str, upload_id: str) -> Response:
    gw = await _checked_upload(request, name, upload_id)
    digest = _digest_param(request)
    if _has_body(request, _content_length(request)):
        info = await _write_chunk(gw, request, name, upload_id, commit_digest=digest)
        emit.blob_pushed(request, name, info.digest, info.size)
        return _created(gw, request, name, info.digest)
    blob = await gw.blobstore.commit_upload(name, upload_id, digest)
    emit.blob_pushed(request, name, blob.digest, blob.size)
    return _created(gw, request, name, blob.digest)


@router.delete("/v2/{name:path}/blobs/uploads/{upload_id}")
async def cancel_upload(request: Request, name: str, upload_id: str) -> Response:
    gw = await _checked_upload(request, name, upload_id)
    await gw.blobstore.cancel_upload(name, upload_id)
    return Response(status_code=204)
