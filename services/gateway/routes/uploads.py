"""Blob uploads: ``/v2/<name>/blobs/uploads/[<id>]`` — monolithic, chunked, resumable, mounts.

Bytes are never held beyond one message: a body that fits in one (``blobstore.chunk_size``) goes
in one short call, a larger one is re-cut into messages and streamed. The blobstore hashes and
verifies them: with the ``digest-algorithm`` the client announced when it started (newest spec;
only a hint: the closing digest may use another algorithm, which is then verified by re-reading
the upload), else sha256.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import APIRouter, Request
from starlette.responses import Response

from services.common import digests, names
from services.common.errors import BLOB_UNKNOWN, DIGEST_INVALID, RANGE_INVALID, SIZE_INVALID, RegistryError
from services.common.ranges import parse_content_range
from services.common.rpc import blobstore_pb2 as pb
from services.gateway import app_state
from services.gateway.app_state import GatewayState
from services.gateway.events import emit
from services.gateway.read_ahead import read_ahead

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
    """The request body in messages of ``size`` bytes or a little more (the last may be shorter):
    what the server read is gathered and joined once per message, with no other copy."""
    parts: list[bytes] = []
    held = 0
    async for piece in request.stream():
        parts.append(piece)
        held += len(piece)
        if held >= size:
            yield b"".join(parts)
            parts, held = [], 0
    if parts:
        yield b"".join(parts)


async def _body(request: Request, length: int | None, size: int) -> AsyncIterator[bytes] | bytes:
    """The body for the blobstore: whole when its declared length fits in one message (a short
    call instead of a stream: most of a small push's cost), else cut into messages as it arrives."""
    if length is not None and length <= size:
        return await request.body()
    return read_ahead(_chunks(request, size))


@dataclass(frozen=True)
class _Session:
    """An upload session as the gateway knows it: started by a POST, or from the signed state of a
    later request's URL."""

    gw: GatewayState
    name: str
    upload_id: str
    # The announced digest-algorithm; empty when the client announced none.
    algorithm: str
    # When a POST started it, while nothing of it may be stored yet (services/gateway/upload_state.py).
    fresh_since: int = 0

    def progress_headers(self, request: Request, size: int) -> dict[str, str]:
        """Where the upload stands. No Content-Length: these headers also go on 204s (which must
        not carry one) and on 416 errors (whose JSON body has its own). The next URL stays fresh
        while nothing is stored: a refused first chunk must not leave the client a dead URL."""
        state = self.gw.signer.pack(self.name, self.upload_id, size, self.algorithm, self.fresh_since if size == 0 else 0)
        return {
            "Location": self.gw.urls.upload(request, self.name, self.upload_id, state),
            "Range": f"0-{max(size - 1, 0)}",
            "Docker-Upload-UUID": self.upload_id,
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


def _announced_algorithm(request: Request) -> str:
    """The ``digest-algorithm`` parameter: empty when absent, DIGEST_INVALID when unsupported."""
    announced = request.query_params.get("digest-algorithm")
    return "" if announced is None else digests.check_algorithm(announced)


@router.post("/v2/{name:path}/blobs/uploads/")
async def start_upload(request: Request, name: str) -> Response:
    names.check_name(name)
    gw = app_state.of(request)
    params = request.query_params
    length = _content_length(request)
    algorithm = _announced_algorithm(request)

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
            name,
            "",
            0,
            await _body(request, length, gw.settings.blobstore.chunk_size),
            commit_digest=digest,
            expected_length=-1 if length is None else length,
        )
        emit.blob_pushed(request, name, info.digest, info.size)
        return _created(gw, request, name, info.digest)

    # No blobstore call: the session reaches storage with its first bytes (a small push's PUT
    # stores the whole blob at once, with no session files at all).
    session = _Session(gw, name, str(uuid.uuid4()), algorithm, int(time.time()))
    return Response(status_code=202, headers=session.progress_headers(request, 0))


async def _checked_upload(request: Request, name: str, upload_id: str) -> _Session:
    """The session a request's URL names, if its signed state is genuine.

    A URL the registry never issued (no state, a forged one, a made-up id) names a session that
    is either unknown, which the spec answers 404 BLOB_UPLOAD_UNKNOWN, or real but reached with a
    wrong state: 400 BLOB_UPLOAD_INVALID, as registry:2 answers. Only such failures cost the
    blobstore call that tells the two apart.
    """
    names.check_name(name)
    gw = app_state.of(request)
    try:
        upload_state = gw.signer.check(request.query_params.get("_state"), name, upload_id)
    except RegistryError:
        await gw.blobstore.upload_status(name, upload_id)  # BLOB_UPLOAD_UNKNOWN if there is no such session
        raise
    return _Session(gw, name, upload_id, upload_state.algorithm, upload_state.fresh_since)


@router.get("/v2/{name:path}/blobs/uploads/{upload_id}")
async def upload_status(request: Request, name: str, upload_id: str) -> Response:
    session = await _checked_upload(request, name, upload_id)
    info = await session.gw.blobstore.upload_status(name, upload_id, session.fresh_since)
    return Response(status_code=204, headers=session.progress_headers(request, info.size))


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


async def _write_chunk(session: _Session, request: Request, commit_digest: str = "") -> pb.UploadInfo:
    """Streams the body into the upload; a chunk at the wrong offset (416) says where to resume."""
    offset, expected = _chunk_bounds(request)
    try:
        return await session.gw.blobstore.write_upload(
            session.name,
            session.upload_id,
            offset,
            await _body(request, _content_length(request), session.gw.settings.blobstore.chunk_size),
            commit_digest=commit_digest,
            expected_length=expected,
            digest_algorithm=session.algorithm,
            fresh_since=session.fresh_since,
        )
    except RegistryError as exc:
        if exc.code is RANGE_INVALID and isinstance(exc.detail, dict) and "size" in exc.detail:
            exc.headers.update(session.progress_headers(request, int(exc.detail["size"])))
        raise


@router.patch("/v2/{name:path}/blobs/uploads/{upload_id}")
async def upload_chunk(request: Request, name: str, upload_id: str) -> Response:
    session = await _checked_upload(request, name, upload_id)
    info = await _write_chunk(session, request)
    return Response(status_code=202, headers=session.progress_headers(request, info.size))


@router.put("/v2/{name:path}/blobs/uploads/{upload_id}")
async def finish_upload(request: Request, name: str, upload_id: str) -> Response:
    session = await _checked_upload(request, name, upload_id)
    gw = session.gw
    digest = _digest_param(request)
    if _has_body(request, _content_length(request)):
        info = await _write_chunk(session, request, commit_digest=digest)
        emit.blob_pushed(request, name, info.digest, info.size)
        return _created(gw, request, name, info.digest)
    blob = await gw.blobstore.commit_upload(name, upload_id, digest, session.fresh_since)
    emit.blob_pushed(request, name, blob.digest, blob.size)
    return _created(gw, request, name, blob.digest)


@router.delete("/v2/{name:path}/blobs/uploads/{upload_id}")
async def cancel_upload(request: Request, name: str, upload_id: str) -> Response:
    session = await _checked_upload(request, name, upload_id)
    await session.gw.blobstore.cancel_upload(name, upload_id, session.fresh_since)
    return Response(status_code=204)
