"""Manifests by tag or digest: ``/v2/<name>/manifests/<reference>``.

A push by digest may also tag the manifest (newest spec): ``PUT .../manifests/<digest>?tag=a&tag=b``
points every listed tag at that digest, whatever its algorithm, and answers one ``OCI-Tag`` header
per tag, so clients that see none fall back to pushing each tag.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from starlette.responses import Response

from services.common import digests, names
from services.common.errors import (
    DIGEST_INVALID,
    MANIFEST_INVALID,
    MANIFEST_UNKNOWN,
    TAG_INVALID,
    UNSUPPORTED,
    RegistryError,
)
from services.common.rpc import blobstore_pb2 as pb
from services.gateway import app_state
from services.gateway import manifest_validation as mv
from services.gateway.events import emit

router = APIRouter()

# The most ``tag`` parameters one push by digest may carry (the spec asks for at least 10).
MAX_PUSHED_TAGS = 100


def _check_reference(reference: str) -> None:
    """For pushes: a reference that is neither a digest nor a valid tag is the client's error."""
    if digests.is_digest(reference):
        digests.parse(reference)
    else:
        names.check_tag(reference)


def _check_existing_reference(reference: str) -> None:
    """For reads and deletes: a tag the grammar refuses can name no manifest, so it is unknown
    (404 MANIFEST_UNKNOWN, as the conformance suite expects for ``.INVALID_MANIFEST_NAME``), not a
    bad request; a malformed digest is still DIGEST_INVALID."""
    if digests.is_digest(reference):
        digests.parse(reference)
    elif not names.is_valid_tag(reference):
        raise RegistryError(MANIFEST_UNKNOWN, {"reference": reference[:300]})


def _pushed_tags(request: Request, reference: str) -> list[str]:
    """The tags a push points at its manifest: the reference when it is a tag, else the ``tag``
    parameters of a push by digest, each once. Every one is checked here, before anything is
    written, so a push tags all of them or none (TAG_INVALID)."""
    listed = request.query_params.getlist("tag")
    if not digests.is_digest(reference):
        if listed:
            raise RegistryError(TAG_INVALID, {"reason": "tag parameters need a push by digest"})
        return [reference]
    if len(listed) > MAX_PUSHED_TAGS:
        raise RegistryError(TAG_INVALID, {"reason": f"more than {MAX_PUSHED_TAGS} tag parameters"})
    return list(dict.fromkeys(names.check_tag(tag) for tag in listed))


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_big(limit)
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise _too_big(limit)
    return bytes(body)


def _too_big(limit: int) -> RegistryError:
    return RegistryError(MANIFEST_INVALID, {"reason": f"manifest larger than {limit} bytes"}, status=413)


def _acceptable(accept: str, media_type: str) -> bool:
    """True unless the client listed concrete types and ours is not among them."""
    offered = [mv.media_type_of(part) for part in accept.split(",") if part.strip()]
    if not offered:
        return True
    return any(t in (media_type, "*/*", "application/*") for t in offered)


async def _serve(request: Request, name: str, reference: str, *, with_body: bool) -> Response:
    names.check_name(name)
    _check_existing_reference(reference)
    gw = app_state.of(request)
    upstream = gw.mirror.upstream_for(name) if gw.mirror else None
    if upstream is not None:  # a mirrored repository: the pull-through cache answers
        found = await gw.mirror.get_manifest(upstream, name, reference)  # type: ignore[union-attr]
    else:
        found = await gw.blobstore.get_manifest(name, reference)
    media_type = mv.stored_media_type(found.payload)
    accept = ",".join(request.headers.getlist("accept"))
    if not _acceptable(accept, media_type):
        raise RegistryError(MANIFEST_UNKNOWN, {"reason": f"the manifest is {media_type}, which the Accept header excludes"})
    headers = {
        "Content-Type": media_type,
        "Content-Length": str(len(found.payload)),
        "Docker-Content-Digest": found.digest,
        "ETag": f'"{found.digest}"',
    }
    if with_body:  # a HEAD is no pull, as in the reference registry
        tag = "" if digests.is_digest(reference) else reference
        emit.manifest_pulled(request, name, found.digest, media_type, len(found.payload), tag)
    return Response(found.payload if with_body else b"", status_code=200, headers=headers)


@router.get("/v2/{name:path}/manifests/{reference}")
async def get_manifest(request: Request, name: str, reference: str) -> Response:
    return await _serve(request, name, reference, with_body=True)


@router.head("/v2/{name:path}/manifests/{reference}")
async def head_manifest(request: Request, name: str, reference: str) -> Response:
    return await _serve(request, name, reference, with_body=False)


@router.put("/v2/{name:path}/manifests/{reference}")
async def put_manifest(request: Request, name: str, reference: str) -> Response:
    names.check_name(name)
    _check_reference(reference)
    tags = _pushed_tags(request, reference)
    gw = app_state.of(request)
    payload = await _read_limited(request, gw.settings.limits.manifest_size)
    parsed = mv.parse(payload, request.headers.get("content-type"))

    if digests.is_digest(reference):
        algorithm = digests.parse(reference).algorithm
        digest = digests.of(payload, algorithm)
        if digest != reference:
            raise RegistryError(DIGEST_INVALID, {"reason": "the manifest does not hash to the digest in the URL", "digest": digest})
    else:  # a push by tag names no algorithm: sha256 (tags keep another one when pushed with it, ?tag=)
        digest = digests.of(payload)

    required_blobs, required_manifests = mv.required(parsed, gw.settings.validation.manifests)
    await gw.blobstore.put_manifest(
        pb.PutManifestRequest(
            repository=name,
            digest=digest,
            payload=payload,
            tags=tags,
            required_blobs=required_blobs,
            required_manifests=required_manifests,
            subject=parsed.subject,
            referrer_descriptor=json.dumps(parsed.referrer_descriptor(digest, len(payload))).encode() if parsed.subject else b"",
        )
    )
    for tag in tags or [""]:  # one event per tag, as when each is pushed on its own
        emit.manifest_pushed(request, name, digest, parsed.media_type, len(payload), tag)
    headers = {
        "Location": gw.urls.manifest(request, name, digest),
        "Docker-Content-Digest": digest,
        "Content-Length": "0",
    }
    if parsed.subject:
        headers["OCI-Subject"] = parsed.subject
    response = Response(status_code=201, headers=headers)
    if digests.is_digest(reference):
        for tag in tags:
            response.headers.append("OCI-Tag", tag)
    return response


@router.delete("/v2/{name:path}/manifests/{reference}")
async def delete_manifest(request: Request, name: str, reference: str) -> Response:
    names.check_name(name)
    _check_existing_reference(reference)
    gw = app_state.of(request)
    if not gw.deletes_enabled:
        raise RegistryError(UNSUPPORTED, {"reason": "deletes are disabled (storage.delete.enabled)"})
    if not digests.is_digest(reference):
        await gw.blobstore.delete_tag(name, reference)
        emit.tag_deleted(request, name, reference)
    else:
        found = await gw.blobstore.get_manifest(name, reference)
        try:
            subject = mv.parse(found.payload, None).subject
        except RegistryError:
            subject = ""
        await gw.blobstore.delete_manifest(name, reference, subject)
        emit.manifest_deleted(request, name, reference)
    return Response(status_code=202, headers={"Content-Length": "0"})
