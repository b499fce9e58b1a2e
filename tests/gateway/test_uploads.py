"""Blob uploads: monolithic, chunked, resumable, mounts, and the signed upload state."""

from __future__ import annotations

import hashlib
import os
import socket
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from starlette.testclient import TestClient

from services.common import config
from services.gateway.app import create_app
from services.gateway.upload_state import UploadStateSigner
from tests.images import sha256
from tests.support.registry import assert_error, checked_client, push_blob, raw_request, start_upload

DATA = b"0123456789abcdefghijklmnopqrstuvwxyz"  # 36 bytes


def upload_id(location: str) -> str:
    return urlsplit(location).path.rsplit("/", 1)[1]


def with_state(location: str, state: str | None) -> str:
    """The upload URL with its ``_state`` replaced (None: removed)."""
    parts = urlsplit(location)
    return parts.path + (f"?_state={state}" if state is not None else "")


def finish(location: str, digest: str) -> str:
    """The upload URL with ``digest`` added (httpx's ``params=`` would drop ``_state``)."""
    return f"{location}&{urlencode({'digest': digest})}"


def state_of(location: str) -> str:
    return parse_qs(urlsplit(location).query)["_state"][0]


def patch(client: httpx.Client, location: str, data: bytes, start: int | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/octet-stream"}
    if start is not None:
        headers["Content-Range"] = f"{start}-{start + len(data) - 1}"
    return client.patch(location, content=data, headers=headers)


def assert_progress(r: httpx.Response, status: int, size: int, uid: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["range"] == f"0-{max(size - 1, 0)}"
    assert r.headers["docker-upload-uuid"] == uid
    assert upload_id(r.headers["location"]) == uid
    assert "_state=" in r.headers["location"]


def assert_blob(client: httpx.Client, repo: str, data: bytes, digest: str | None = None) -> None:
    digest = digest or sha256(data)
    r = client.get(f"/v2/{repo}/blobs/{digest}")
    assert (r.status_code, r.content) == (200, data)


def assert_created(r: httpx.Response, repo: str, digest: str) -> None:
    assert r.status_code == 201, r.text
    assert r.headers["docker-content-digest"] == digest
    assert urlsplit(r.headers["location"]).path == f"/v2/{repo}/blobs/{digest}"


# Monolithic


def test_single_post_with_digest_creates_blob(client, repo):
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": sha256(DATA)}, content=DATA)
    assert_created(r, repo, sha256(DATA))
    assert_blob(client, repo, DATA)


def test_single_post_with_chunked_body(client, repo):
    def body():
        yield DATA[:10]
        yield DATA[10:]

    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": sha256(DATA)}, content=body())
    assert r.request.headers["transfer-encoding"] == "chunked"
    assert_created(r, repo, sha256(DATA))
    assert_blob(client, repo, DATA)


def test_single_post_with_wrong_digest_is_400_and_stores_nothing(client, repo):
    wrong = sha256(b"other content")
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": wrong}, content=DATA)
    assert_error(r, 400, "DIGEST_INVALID")
    assert client.head(f"/v2/{repo}/blobs/{wrong}").status_code == 404
    assert client.head(f"/v2/{repo}/blobs/{sha256(DATA)}").status_code == 404


def test_post_starts_upload_with_location(client, repo):
    r = client.post(f"/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202
    assert r.headers["content-length"] == "0"
    uid = r.headers["docker-upload-uuid"]
    uuid.UUID(uid)
    assert urlsplit(r.headers["location"]).path == f"/v2/{repo}/blobs/uploads/{uid}"
    assert_progress(r, 202, 0, uid)


def test_post_then_put_creates_blob(client, repo):
    location = start_upload(client, repo)
    r = client.put(finish(location, sha256(DATA)), content=DATA, headers={"Content-Type": "application/octet-stream"})
    assert_created(r, repo, sha256(DATA))
    assert_blob(client, repo, DATA)


def test_sha512_upload(client, repo):
    digest = "sha512:" + hashlib.sha512(DATA).hexdigest()
    location = start_upload(client, repo)
    r = client.put(finish(location, digest), content=DATA)
    assert_created(r, repo, digest)
    assert_blob(client, repo, DATA, digest)
    assert client.head(f"/v2/{repo}/blobs/{digest}").headers["docker-content-digest"] == digest


def test_single_post_sha512(client, repo):
    digest = "sha512:" + hashlib.sha512(DATA).hexdigest()
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=DATA)
    assert_created(r, repo, digest)
    assert_blob(client, repo, DATA, digest)


# digest-algorithm (newest spec): the algorithm announced when the upload starts


def sha512(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


def start_announced(client: httpx.Client, repo: str, algorithm: str) -> str:
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest-algorithm": algorithm})
    assert r.status_code == 202, r.text
    return r.headers["location"]


def assert_blob_by(client: httpx.Client, repo: str, data: bytes, digest: str) -> None:
    assert_blob(client, repo, data, digest)
    r = client.head(f"/v2/{repo}/blobs/{digest}")
    assert (r.status_code, r.headers["docker-content-digest"], r.headers["content-length"]) == (200, digest, str(len(data)))


def test_announced_sha512_monolithic_upload(client, repo):
    location = start_announced(client, repo, "sha512")
    r = client.put(finish(location, sha512(DATA)), content=DATA)
    assert_created(r, repo, sha512(DATA))
    assert_blob_by(client, repo, DATA, sha512(DATA))
    assert client.head(f"/v2/{repo}/blobs/{sha256(DATA)}").status_code == 404  # stored under sha512 only


def test_announced_sha512_single_post(client, repo):
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest-algorithm": "sha512", "digest": sha512(DATA)}, content=DATA)
    assert_created(r, repo, sha512(DATA))
    assert_blob_by(client, repo, DATA, sha512(DATA))


def test_announced_sha512_chunked_upload(client, repo):
    location = start_announced(client, repo, "sha512")
    uid = upload_id(location)
    r = patch(client, location, DATA[:10], start=0)
    assert_progress(r, 202, 10, uid)
    status = client.get(r.headers["location"])  # the announcement survives every new Location
    assert_progress(status, 204, 10, uid)
    r = patch(client, status.headers["location"], DATA[10:], start=10)
    assert_progress(r, 202, len(DATA), uid)
    r = client.put(finish(r.headers["location"], sha512(DATA)))
    assert_created(r, repo, sha512(DATA))
    assert_blob_by(client, repo, DATA, sha512(DATA))


def test_announced_sha512_upload_checks_the_content(client, repo):
    location = start_announced(client, repo, "sha512")
    r = patch(client, location, DATA, start=0)
    wrong = sha512(DATA + b"!")
    assert_error(client.put(finish(r.headers["location"], wrong)), 400, "DIGEST_INVALID")
    assert client.head(f"/v2/{repo}/blobs/{wrong}").status_code == 404
    assert client.head(f"/v2/{repo}/blobs/{sha512(DATA)}").status_code == 404


@pytest.mark.parametrize("algorithm", ["md5", "sha384", "blake3", "SHA512", "sha256:abc", ""])
def test_unknown_digest_algorithm_is_400(client, repo, algorithm):
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest-algorithm": algorithm})
    assert "location" not in r.headers
    assert_error(r, 400, "DIGEST_INVALID")
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest-algorithm": algorithm, "digest": sha256(DATA)}, content=DATA)
    assert_error(r, 400, "DIGEST_INVALID")
    assert client.head(f"/v2/{repo}/blobs/{sha256(DATA)}").status_code == 404


@pytest.mark.parametrize("chunked", [False, True], ids=["monolithic", "chunked"])
def test_digest_of_another_algorithm_than_announced_is_accepted(client, repo, chunked):
    """digest-algorithm is a hint (the spec's word): the closing digest decides, and is verified
    against the bytes whatever was announced; only a wrong digest is refused."""
    location = start_announced(client, repo, "sha512")
    if chunked:
        location = patch(client, location, DATA, start=0).headers["location"]
    body = b"" if chunked else DATA
    assert_error(client.put(finish(location, sha256(DATA + b"!")), content=body), 400, "DIGEST_INVALID")

    location = start_announced(client, repo, "sha512")
    if chunked:
        location = patch(client, location, DATA, start=0).headers["location"]
    assert_created(client.put(finish(location, sha256(DATA)), content=body), repo, sha256(DATA))
    assert_blob_by(client, repo, DATA, sha256(DATA))
    assert client.head(f"/v2/{repo}/blobs/{sha512(DATA)}").status_code == 404


def test_single_post_digest_of_another_algorithm_than_announced_is_accepted(client, repo):
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest-algorithm": "sha512", "digest": sha256(DATA)}, content=DATA)
    assert_created(r, repo, sha256(DATA))
    assert_blob_by(client, repo, DATA, sha256(DATA))


def test_the_announcement_reaches_the_blobstore_with_every_chunk(berth, repo):
    """It travels in the upload's signed state, so whichever gateway and blobstore take a chunk
    hash it with the announced algorithm (seen here on the gateway's blobstore calls)."""
    app = create_app(config.load(environ=berth.environment()))
    announced: list[str] = []
    with TestClient(app) as c:
        blobstore = app.state.gateway.blobstore
        write_upload = blobstore.write_upload

        async def recording(*args: Any, **kwargs: Any) -> Any:
            announced.append(kwargs["digest_algorithm"])
            return await write_upload(*args, **kwargs)

        blobstore.write_upload = recording
        location = c.post(f"/v2/{repo}/blobs/uploads/", params={"digest-algorithm": "sha512"}).headers["location"]
        location = c.patch(location, content=DATA[:10], headers={"Content-Range": "0-9"}).headers["location"]
        location = c.get(location).headers["location"]
        assert_created(c.put(finish(location, sha512(DATA)), content=DATA[10:]), repo, sha512(DATA))
    assert announced == ["sha512", "sha512"]


# Chunked


def test_chunked_upload_with_content_range(client, repo):
    location = start_upload(client, repo)
    uid = upload_id(location)
    r = patch(client, location, DATA[:10], start=0)
    assert_progress(r, 202, 10, uid)
    r = patch(client, r.headers["location"], DATA[10:], start=10)
    assert_progress(r, 202, len(DATA), uid)
    r = client.put(finish(r.headers["location"], sha256(DATA)))
    assert_created(r, repo, sha256(DATA))
    assert_blob(client, repo, DATA)


def test_chunked_upload_without_content_range_appends(client, repo):
    """Docker's client PATCHes without Content-Range (a streamed upload)."""
    location = start_upload(client, repo)
    r = patch(client, location, DATA[:5])
    assert_progress(r, 202, 5, upload_id(location))
    r = patch(client, r.headers["location"], DATA[5:])
    assert_progress(r, 202, len(DATA), upload_id(location))
    assert_created(client.put(finish(r.headers["location"], sha256(DATA))), repo, sha256(DATA))
    assert_blob(client, repo, DATA)


def test_final_chunk_in_put_body(client, repo):
    location = start_upload(client, repo)
    r = patch(client, location, DATA[:20], start=0)
    r = client.put(finish(r.headers["location"], sha256(DATA)), content=DATA[20:], headers={"Content-Range": f"20-{len(DATA) - 1}"})
    assert_created(r, repo, sha256(DATA))
    assert_blob(client, repo, DATA)


def test_final_chunk_in_put_body_without_content_range(client, repo):
    location = start_upload(client, repo)
    r = patch(client, location, DATA[:20], start=0)
    r = client.put(finish(r.headers["location"], sha256(DATA)), content=DATA[20:])
    assert_created(r, repo, sha256(DATA))
    assert_blob(client, repo, DATA)


def test_out_of_order_chunk_is_416(client, repo):
    location = start_upload(client, repo)
    r = patch(client, location, DATA[:10], start=0)
    r = patch(client, r.headers["location"], DATA[20:30], start=20)
    assert_error(r, 416, "RANGE_INVALID")
    assert_progress(r, 416, 10, upload_id(location))  # where to resume from
    # The upload is intact and goes on from where it was.
    r = patch(client, r.headers["location"], DATA[10:], start=10)
    assert_progress(r, 202, len(DATA), upload_id(location))
    assert_created(client.put(finish(r.headers["location"], sha256(DATA))), repo, sha256(DATA))
    assert_blob(client, repo, DATA)


def test_overlapping_chunk_is_416(client, repo):
    location = start_upload(client, repo)
    r = patch(client, location, DATA[:10], start=0)
    r = patch(client, r.headers["location"], DATA[5:15], start=5)
    assert_error(r, 416, "RANGE_INVALID")
    status = client.get(location)
    assert_progress(status, 204, 10, upload_id(location))


def test_large_rejected_chunks_keep_their_error(client, repo):
    """A chunk spanning many gRPC messages, refused before it is read, still gets its own status
    (416 / 404) and never a 500, however the refusal and the streaming interleave."""
    big = os.urandom(3 * (1 << 20))
    finished = start_upload(client, repo)
    assert client.put(finish(finished, sha256(b"done")), content=b"done").status_code == 201
    for _ in range(8):
        location = start_upload(client, repo)
        assert_error(patch(client, location, big, start=7), 416, "RANGE_INVALID")
        assert_error(patch(client, finished, big, start=4), 404, "BLOB_UPLOAD_UNKNOWN")


def test_a_refused_first_chunk_leaves_a_url_to_resume_from(client, repo):
    """Nothing is stored yet: the 416's Location still names the (fresh) session."""
    r = patch(client, start_upload(client, repo), DATA, start=10)
    assert_error(r, 416, "RANGE_INVALID")
    r = patch(client, r.headers["location"], DATA, start=0)
    assert r.status_code == 202, r.text
    assert client.put(finish(r.headers["location"], sha256(DATA))).status_code == 201
    assert_blob(client, repo, DATA)


def test_first_chunk_not_at_zero_is_416(client, repo):
    location = start_upload(client, repo)
    assert_error(patch(client, location, DATA[:10], start=3), 416, "RANGE_INVALID")


def test_final_chunk_in_put_at_wrong_offset_is_416(client, repo):
    location = start_upload(client, repo)
    r = patch(client, location, DATA[:20], start=0)
    r = client.put(finish(r.headers["location"], sha256(DATA)), content=DATA[25:], headers={"Content-Range": f"25-{len(DATA) - 1}"})
    assert_error(r, 416, "RANGE_INVALID")
    assert_progress(r, 416, 20, upload_id(location))
    # Resumed from where the upload stands, it completes.
    r = client.put(finish(r.headers["location"], sha256(DATA)), content=DATA[20:], headers={"Content-Range": f"20-{len(DATA) - 1}"})
    assert_created(r, repo, sha256(DATA))


def test_content_range_disagreeing_with_length_is_rejected(client, repo):
    location = start_upload(client, repo)
    r = client.patch(location, content=DATA[:10], headers={"Content-Range": "0-4"})
    assert_error(r, 416, "RANGE_INVALID")


def test_chunk_shorter_than_its_content_range_is_400(client, repo):
    """With a chunked body the length is only known at the end; a short chunk is SIZE_INVALID."""
    location = start_upload(client, repo)

    def body():
        yield DATA[:5]

    r = client.patch(location, content=body(), headers={"Content-Range": "0-9"})
    assert "content-length" not in r.request.headers
    assert_error(r, 400, "SIZE_INVALID")


def test_malformed_content_range_is_400(client, repo):
    location = start_upload(client, repo)
    r = client.patch(location, content=DATA[:10], headers={"Content-Range": "zero-nine"})
    assert_error(r, 400, "BLOB_UPLOAD_INVALID")


def test_upload_status_gives_range(client, repo):
    location = start_upload(client, repo)
    assert_progress(client.get(location), 204, 0, upload_id(location))
    patch(client, location, DATA[:7], start=0)
    r = client.get(location)
    assert_progress(r, 204, 7, upload_id(location))
    assert r.content == b""
    assert "content-length" not in r.headers  # RFC 9110: never on a 204


def test_delete_upload_then_it_is_unknown(client, repo):
    location = start_upload(client, repo)
    patch(client, location, DATA, start=0)
    r = client.delete(location)
    assert r.status_code == 204
    assert "content-length" not in r.headers
    assert_error(client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.delete(location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.put(finish(location, sha256(DATA))), 404, "BLOB_UPLOAD_UNKNOWN")
    assert client.head(f"/v2/{repo}/blobs/{sha256(DATA)}").status_code == 404


# Digests


def test_digest_mismatch_on_put_is_400_and_leaves_nothing(client, repo):
    location = start_upload(client, repo)
    r = patch(client, location, DATA, start=0)
    wrong = sha256(b"not the content")
    r = client.put(finish(r.headers["location"], wrong))
    assert_error(r, 400, "DIGEST_INVALID")
    assert client.head(f"/v2/{repo}/blobs/{wrong}").status_code == 404
    assert client.head(f"/v2/{repo}/blobs/{sha256(DATA)}").status_code == 404
    assert_error(client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")


def test_digest_mismatch_with_body_in_put_leaves_nothing(client, repo):
    location = start_upload(client, repo)
    wrong = "sha512:" + hashlib.sha512(b"not the content").hexdigest()
    assert_error(client.put(finish(location, wrong), content=DATA), 400, "DIGEST_INVALID")
    assert client.head(f"/v2/{repo}/blobs/{wrong}").status_code == 404
    assert_error(client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")


@pytest.mark.parametrize(
    "digest",
    [
        "md5:" + hashlib.md5(DATA).hexdigest(),  # unknown algorithm
        "sha256:1234",  # too short
        "sha256:" + "Z" * 64,  # not hex
        "sha256:" + hashlib.sha256(DATA).hexdigest().upper(),  # upper-case hex
        "sha256" + hashlib.sha256(DATA).hexdigest(),  # no colon
        "",
    ],
)
def test_bad_digest_on_put_is_400(client, repo, digest):
    location = start_upload(client, repo)
    assert_error(client.put(finish(location, digest), content=DATA), 400, "DIGEST_INVALID")
    # Nothing was consumed: the upload can still finish properly.
    assert_created(client.put(finish(location, sha256(DATA)), content=DATA), repo, sha256(DATA))


@pytest.mark.parametrize("digest", ["md5:" + hashlib.md5(DATA).hexdigest(), "sha256:nothex"])
def test_bad_digest_on_single_post_is_400(client, repo, digest):
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=DATA)
    assert_error(r, 400, "DIGEST_INVALID")


def test_put_without_digest_is_400(client, repo):
    location = start_upload(client, repo)
    assert_error(client.put(location, content=DATA), 400, "DIGEST_INVALID")


# Mounts


def test_mount_from_repository(client, repo):
    source = f"{repo}-source"
    digest = push_blob(client, source, DATA)
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"mount": digest, "from": source})
    assert_created(r, repo, digest)
    assert_blob(client, repo, DATA)


def test_mount_of_unknown_blob_starts_an_upload(client, repo):
    source = f"{repo}-source"
    push_blob(client, source, b"source exists")
    missing = sha256(b"not in the registry")
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"mount": missing, "from": source})
    assert_progress(r, 202, 0, r.headers["docker-upload-uuid"])
    # ... and that upload works.
    assert_created(client.put(finish(r.headers["location"], sha256(DATA)), content=DATA), repo, sha256(DATA))


def test_mount_from_repository_without_the_blob_starts_an_upload(client, repo):
    digest = push_blob(client, f"{repo}-holder", DATA)
    source = f"{repo}-source"
    push_blob(client, source, b"source exists")
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"mount": digest, "from": source})
    assert r.status_code == 202
    assert client.head(f"/v2/{repo}/blobs/{digest}").status_code == 404


def test_mount_without_from_for_known_blob(client, repo):
    digest = push_blob(client, f"{repo}-holder", DATA)
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"mount": digest})
    assert_created(r, repo, digest)
    assert_blob(client, repo, DATA)


def test_mount_with_malformed_digest_is_400(client, repo):
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"mount": "sha256:xyz", "from": f"{repo}-source"})
    assert_error(r, 400, "DIGEST_INVALID")


# Unknown and finished uploads


def test_patch_to_unknown_upload_is_404(client, repo):
    """A genuine Location (signed with the test registry's secret) for an upload the blobstore never had."""
    uid = str(uuid.uuid4())
    state = UploadStateSigner("test-secret").pack(repo, uid, 0)
    location = f"/v2/{repo}/blobs/uploads/{uid}?_state={state}"
    assert_error(patch(client, location, DATA, start=0), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")


def test_upload_id_that_is_not_a_uuid_is_404(client, repo):
    state = UploadStateSigner("test-secret").pack(repo, "not-an-upload", 0)
    assert_error(client.get(f"/v2/{repo}/blobs/uploads/not-an-upload?_state={state}"), 404, "BLOB_UPLOAD_UNKNOWN")


def _unsigned_request(client: httpx.Client, method: str, url: str) -> httpx.Response:
    """``method`` on an upload URL as a client would send it to finish or resume an upload."""
    if method == "PUT":
        url += ("&" if "?" in url else "?") + urlencode({"digest": sha256(DATA)})
    return client.request(method, url, content=DATA if method in ("PATCH", "PUT") else b"")


@pytest.mark.parametrize("method", ["GET", "PATCH", "PUT", "DELETE"])
@pytest.mark.parametrize(
    "state",
    [None, "garbage", UploadStateSigner("another-secret").pack("any", "any", 0)],
    ids=["no-state", "malformed-state", "foreign-state"],
)
@pytest.mark.parametrize("uid", [str(uuid.uuid4()), "made-up", "0" * 300], ids=["uuid", "made-up", "long"])
def test_upload_the_registry_never_issued_is_404(client, repo, method, state, uid):
    """An id without Berth's state (or with one Berth did not sign) names a session that does not
    exist: 404 BLOB_UPLOAD_UNKNOWN, as the spec says, not 400 for the missing state."""
    start_upload(client, repo)  # the repository has uploads, just not this one
    url = f"/v2/{repo}/blobs/uploads/{uid}" + (f"?{urlencode({'_state': state})}" if state is not None else "")
    assert_error(_unsigned_request(client, method, url), 404, "BLOB_UPLOAD_UNKNOWN")


def test_upload_in_a_repository_that_does_not_exist_is_404(client):
    url = f"/v2/test_uploads/never-pushed/blobs/uploads/{uuid.uuid4()}"
    for method in ("GET", "PATCH", "PUT", "DELETE"):
        assert_error(_unsigned_request(client, method, url), 404, "BLOB_UPLOAD_UNKNOWN")


def test_patch_to_finished_upload_is_404(client, repo):
    location = start_upload(client, repo)
    r = patch(client, location, DATA, start=0)
    finished = r.headers["location"]
    assert client.put(finish(finished, sha256(DATA))).status_code == 201
    assert_error(patch(client, finished, b"more", start=len(DATA)), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.put(finish(finished, sha256(DATA))), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_blob(client, repo, DATA)


# The signed upload state


def _flip(ch: str) -> str:
    return "A" if ch != "A" else "B"


def _stored_upload(client: httpx.Client, repo: str) -> str:
    """A session with bytes in storage (its first chunk, DATA[:4]): the Location after them."""
    r = patch(client, start_upload(client, repo), DATA[:4], start=0)
    assert r.status_code == 202, r.text
    return r.headers["location"]


def test_tampered_state_signature_is_400(client, repo):
    location = _stored_upload(client, repo)
    state = state_of(location)
    tampered = state[:-1] + _flip(state[-1])
    assert_error(patch(client, with_state(location, tampered), DATA[4:], start=4), 400, "BLOB_UPLOAD_INVALID")
    assert_progress(client.get(location), 204, 4, upload_id(location))  # nothing more was written


def test_tampered_state_body_is_400(client, repo):
    location = _stored_upload(client, repo)
    state = state_of(location)
    tampered = _flip(state[0]) + state[1:]
    assert_error(client.get(with_state(location, tampered)), 400, "BLOB_UPLOAD_INVALID")


def test_state_of_another_upload_is_400(client, repo):
    first, second = _stored_upload(client, repo), start_upload(client, repo)
    swapped = with_state(first, state_of(second))
    assert_error(patch(client, swapped, DATA[4:], start=4), 400, "BLOB_UPLOAD_INVALID")
    assert_error(client.put(finish(swapped, sha256(DATA)), content=DATA[4:]), 400, "BLOB_UPLOAD_INVALID")
    assert_error(client.delete(swapped), 400, "BLOB_UPLOAD_INVALID")
    assert_progress(client.get(first), 204, 4, upload_id(first))


@pytest.mark.parametrize("method", ["GET", "PATCH", "PUT", "DELETE"])
def test_a_wrong_state_for_a_session_with_nothing_stored_is_404(client, repo, method):
    """Until its first bytes, a session lives only in its signed URL (the blobstore has no trace
    of it): reached with a broken state, it cannot be told from a made-up one, so it is unknown."""
    location = start_upload(client, repo)
    state = state_of(location)
    for broken in (None, state[:-1] + _flip(state[-1])):
        url = with_state(location, broken)
        if method == "PUT":
            url += ("&" if "?" in url else "?") + urlencode({"digest": sha256(DATA)})
        r = client.request(method, url, content=DATA if method in ("PATCH", "PUT") else b"")
        assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")
    assert_progress(client.get(location), 204, 0, upload_id(location))  # still there, still empty


def test_upload_of_another_repository_is_unknown_here(client, repo):
    """The session exists, but not in this repository: from here it is unknown (404), and the
    move changes nothing for the upload where it belongs."""
    other = start_upload(client, f"{repo}-other")
    moved = other.replace(f"/{repo}-other/", f"/{repo}/")
    assert_error(client.get(moved), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(patch(client, moved, DATA, start=0), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_progress(client.get(other), 204, 0, upload_id(other))


@pytest.mark.parametrize("method", ["GET", "PATCH", "PUT", "DELETE"])
def test_missing_state_is_400(client, repo, method):
    """The session exists: the request reaching it without its state is what is wrong."""
    location = _stored_upload(client, repo)
    url = with_state(location, None) + (f"?digest={sha256(DATA)}" if method == "PUT" else "")
    assert_error(client.request(method, url, content=b""), 400, "BLOB_UPLOAD_INVALID")


# Content-Length the HTTP server cannot or the gateway will not accept


def test_absurd_content_length_is_400_size_invalid(berth, client, repo):
    """A length that parses as an integer reaches the gateway, which refuses it before reading."""
    location = start_upload(client, repo)
    path = urlsplit(location).path + "?" + urlsplit(location).query
    r = raw_request(berth.http_port, "PATCH", path, {"Content-Length": str(10**17)}, b"x")
    assert r.status == 400
    assert r.headers["content-type"] == "application/json"
    assert [e["code"] for e in r.json()["errors"]] == ["SIZE_INVALID"]
    assert_progress(client.get(location), 204, 0, upload_id(location))


@pytest.mark.parametrize("length", ["-1", "99999999999999999999999999", "12abc"])
def test_malformed_content_length_is_refused_by_the_http_server(berth, client, repo, length):
    """Negative, beyond 64 bits or not a number: the HTTP parser refuses the request before the
    gateway sees it, still with the JSON envelope, and closes the connection."""
    location = start_upload(client, repo)
    path = urlsplit(location).path + "?" + urlsplit(location).query
    for method, target in (("PATCH", path), ("POST", f"/v2/{repo}/blobs/uploads/?digest={sha256(DATA)}")):
        r = raw_request(berth.http_port, method, target, {"Content-Length": length}, b"x")
        assert r.status == 400
        assert r.headers["connection"] == "close"
        assert r.headers["content-type"] == "application/json"
        assert r.headers["docker-distribution-api-version"] == "registry/2.0"
        assert [e["code"] for e in r.json()["errors"]] == ["UNSUPPORTED"]
    assert_progress(client.get(location), 204, 0, upload_id(location))
    assert client.head(f"/v2/{repo}/blobs/{sha256(DATA)}").status_code == 404


# Clients that go away mid-request


def send_and_abandon(port: int, method: str, target: str, declared: int, sent: bytes, *, until=None) -> None:
    """Sends a request head declaring ``declared`` body bytes, then ``sent``, then hangs up
    (after ``until()`` holds, if given: proof the server is inside the request)."""
    with socket.create_connection(("127.0.0.1", port)) as conn:
        head = f"{method} {target} HTTP/1.1\r\nHost: registry\r\nContent-Length: {declared}\r\n\r\n"
        conn.sendall(head.encode() + sent)
        if until is not None:
            eventually(until)


def eventually(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.02)


def test_interrupted_patch_can_be_resumed(berth, client, repo):
    """Resumable push: after a PATCH dies midway, the upload says how far it got (GET), and the
    client goes on from there; a 416 means "ask again"."""
    data = os.urandom((1 << 20) + 4096)  # more than one chunk on the gRPC stream
    location = start_upload(client, repo)
    patch(client, location, data[:5], start=0)
    target = urlsplit(location).path + "?" + urlsplit(location).query
    send_and_abandon(berth.http_port, "PATCH", target, len(data) - 5, data[5 : (1 << 20) + 100])
    for _ in range(20):
        end = int(client.get(location).headers["range"].split("-")[1])
        assert end >= 4
        r = patch(client, location, data[end + 1 :], start=end + 1)
        if r.status_code != 416:
            break
    assert_progress(r, 202, len(data), upload_id(location))
    assert_created(client.put(finish(r.headers["location"], sha256(data))), repo, sha256(data))
    assert_blob(client, repo, data)


def test_abandoned_single_post_leaves_no_session_and_no_error(fresh_berth):
    """A single-POST upload has no URL to resume by: when its client hangs up, its session goes.
    The body is larger than one message, so it is streamed (a smaller one is read whole first)."""
    fresh_berth.start()
    data = os.urandom((1 << 20) + 4096)
    uploads = fresh_berth.data_dir / "docker/registry/v2/repositories/test_uploads/abandoned/_uploads"
    sessions = lambda: list(uploads.iterdir()) if uploads.exists() else []  # noqa: E731
    send_and_abandon(
        fresh_berth.http_port,
        "POST",
        f"/v2/test_uploads/abandoned/blobs/uploads/?digest={sha256(data)}",
        len(data),
        data[:10],
        until=lambda: len(sessions()) == 1,
    )
    eventually(lambda: sessions() == [])
    with checked_client(fresh_berth.url) as client:
        assert client.head(f"/v2/test_uploads/abandoned/blobs/{sha256(data)}").status_code == 404
    for service in ("gateway", "blobstore"):
        assert "Traceback" not in fresh_berth.log(service), fresh_berth.log(service)


@pytest.mark.parametrize("tail", ["/\u0080", "\u00e9", "\U0001f600"])
def test_a_state_signature_with_non_ascii_characters_is_a_bad_state_not_a_crash(tail: str) -> None:
    """Found by the route fuzzer: hmac.compare_digest raised TypeError on non-ASCII str (a 500)."""
    from services.common.errors import RegistryError

    signer = UploadStateSigner("test-secret")
    with pytest.raises(RegistryError) as refused:
        signer.check(signer.pack("fuzz/app", "some-upload", 0) + tail, "fuzz/app", "some-upload")
    assert refused.value.code.name == "BLOB_UPLOAD_INVALID"
