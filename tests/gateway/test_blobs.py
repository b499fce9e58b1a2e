"""Blob reads, ranges, repository isolation and deletes: /v2/<name>/blobs/<digest>."""

from __future__ import annotations

import os

import pytest

from tests.images import sha256
from tests.support.registry import assert_error, push_blob

DATA = bytes(range(256)) * 4  # 1024 bytes, every offset distinguishable


@pytest.fixture()
def blob(client, repo):
    return push_blob(client, repo, DATA)


def test_head_blob_gives_size_and_digest_without_body(client, repo, blob):
    r = client.head(f"/v2/{repo}/blobs/{blob}")
    assert r.status_code == 200
    assert r.headers["content-length"] == str(len(DATA))
    assert r.headers["docker-content-digest"] == blob
    assert r.content == b""


def test_get_blob_returns_exact_bytes(client, repo, blob):
    r = client.get(f"/v2/{repo}/blobs/{blob}")
    assert r.status_code == 200
    assert r.content == DATA
    assert r.headers["content-length"] == str(len(DATA))
    assert r.headers["docker-content-digest"] == blob
    assert r.headers["accept-ranges"] == "bytes"


def test_get_larger_blob_spanning_many_chunks(client, repo):
    data = os.urandom(3 * (1 << 20) + 17)
    digest = push_blob(client, repo, data)
    r = client.get(f"/v2/{repo}/blobs/{digest}")
    assert r.status_code == 200
    assert sha256(r.content) == digest


def test_empty_blob_round_trips(client, repo):
    digest = push_blob(client, repo, b"")
    r = client.get(f"/v2/{repo}/blobs/{digest}")
    assert (r.status_code, r.content, r.headers["content-length"]) == (200, b"", "0")


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-9", 0, 9),
        ("bytes=1000-", 1000, 1023),  # open-ended
        ("bytes=-24", 1000, 1023),  # suffix: the last 24 bytes
        ("bytes=1020-5000", 1020, 1023),  # end past the size is clamped
        ("bytes=-5000", 0, 1023),  # suffix longer than the blob
    ],
)
def test_range_request_gives_partial_content(client, repo, blob, header, start, end):
    r = client.get(f"/v2/{repo}/blobs/{blob}", headers={"Range": header})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes {start}-{end}/{len(DATA)}"
    assert r.headers["content-length"] == str(end - start + 1)
    assert r.content == DATA[start : end + 1]


@pytest.mark.parametrize(
    "header", ["bytes=1024-", "bytes=5000-6000", "bytes=-0", "bytes=500-0", "bytes=9-0", "items=0-9", "bytes=", "bytes=a-b", "0-9"]
)
def test_unsatisfiable_or_malformed_range_is_416(client, repo, blob, header):
    r = client.get(f"/v2/{repo}/blobs/{blob}", headers={"Range": header})
    assert_error(r, 416, "RANGE_INVALID")
    assert r.headers["content-range"] == f"bytes */{len(DATA)}"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6"])
def test_several_ranges_are_ignored(client, repo, blob, header):
    r = client.get(f"/v2/{repo}/blobs/{blob}", headers={"Range": header})
    assert r.status_code == 200
    assert r.content == DATA
    assert "content-range" not in r.headers


def test_range_on_unknown_blob_is_404(client, repo):
    r = client.get(f"/v2/{repo}/blobs/{sha256(b'never pushed')}", headers={"Range": "bytes=0-1"})
    assert_error(r, 404, "BLOB_UNKNOWN")


def test_unknown_blob_is_404(client, repo, blob):
    missing = sha256(b"never pushed")
    assert_error(client.get(f"/v2/{repo}/blobs/{missing}"), 404, "BLOB_UNKNOWN")
    r = client.head(f"/v2/{repo}/blobs/{missing}")
    assert r.status_code == 404
    assert r.content == b""


def test_blob_in_unknown_repository_is_404(client):
    assert_error(client.get(f"/v2/test_blobs/no-such-repo/blobs/{sha256(DATA)}"), 404, "BLOB_UNKNOWN")


@pytest.mark.parametrize("digest", ["sha256:abc", "md5:d41d8cd98f00b204e9800998ecf8427e", "sha256:" + "A" * 64, "nodigest"])
def test_malformed_digest_is_400(client, repo, digest):
    assert_error(client.get(f"/v2/{repo}/blobs/{digest}"), 400, "DIGEST_INVALID")


def test_blob_of_another_repository_is_not_readable_until_mounted(client, repo, blob):
    other = f"{repo}-other"
    push_blob(client, other, b"something else, so the repository exists")
    assert_error(client.get(f"/v2/{other}/blobs/{blob}"), 404, "BLOB_UNKNOWN")
    assert client.head(f"/v2/{other}/blobs/{blob}").status_code == 404

    r = client.post(f"/v2/{other}/blobs/uploads/", params={"mount": blob, "from": repo})
    assert r.status_code == 201
    r = client.get(f"/v2/{other}/blobs/{blob}")
    assert (r.status_code, r.content) == (200, DATA)


def test_delete_blob_then_it_is_gone(client, repo, blob):
    r = client.delete(f"/v2/{repo}/blobs/{blob}")
    assert r.status_code == 202
    assert_error(client.get(f"/v2/{repo}/blobs/{blob}"), 404, "BLOB_UNKNOWN")
    assert client.head(f"/v2/{repo}/blobs/{blob}").status_code == 404
    assert_error(client.delete(f"/v2/{repo}/blobs/{blob}"), 404, "BLOB_UNKNOWN")


def test_delete_blob_leaves_other_repositories_alone(client, repo, blob):
    other = f"{repo}-other"
    assert client.post(f"/v2/{other}/blobs/uploads/", params={"mount": blob, "from": repo}).status_code == 201
    assert client.delete(f"/v2/{repo}/blobs/{blob}").status_code == 202
    r = client.get(f"/v2/{other}/blobs/{blob}")
    assert (r.status_code, r.content) == (200, DATA)


def test_deleted_blob_can_be_pushed_again(client, repo, blob):
    assert client.delete(f"/v2/{repo}/blobs/{blob}").status_code == 202
    push_blob(client, repo, DATA)
    assert client.get(f"/v2/{repo}/blobs/{blob}").content == DATA
