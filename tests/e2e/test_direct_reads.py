"""Large blob reads on filesystem storage by signed redirect to the blobstore's own HTTP listener
(blobstore.public_url + storage_redirect): the same answers as the gateway's, bytes by sendfile."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.e2e.test_skopeo import copy, layout_blob_digests, sha256
from tests.images import single_image
from tests.support.auth import write_htpasswd
from tests.support.processes import Berth

BIG = os.urandom(3 * 1024 * 1024 + 17)
BIG_DIGEST = "sha256:" + hashlib.sha256(BIG).hexdigest()
SMALL = b"small blobs are streamed by the gateway"
SMALL_DIGEST = "sha256:" + hashlib.sha256(SMALL).hexdigest()


def _env(berth: Berth, **extra: str) -> dict[str, str]:
    return {
        "REGISTRY_STORAGE_REDIRECT": "true",
        "REGISTRY_BLOBSTORE_PUBLIC_URL": f"http://127.0.0.1:{berth.blobstore_http_port}",
        "REGISTRY_STORAGE_DELETE_ENABLED": "true",
        **extra,
    }


@pytest.fixture()
def berth(tmp_path: Path) -> Iterator[Berth]:
    instance = Berth(tmp_path)
    instance.env.update(_env(instance))
    instance.start()
    yield instance
    instance.stop()


def _push(client: httpx.Client, repository: str, data: bytes, digest: str) -> None:
    answer = client.post(
        f"/v2/{repository}/blobs/uploads/", params={"digest": digest}, content=data, headers={"Content-Type": "application/octet-stream"}
    )
    assert answer.status_code == 201, answer.text


def _direct_read_bytes(berth: Berth) -> float:
    text = httpx.get(f"http://127.0.0.1:{berth.blobstore_http_port}/metrics").text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("berth_direct_read_bytes_total "))


def test_a_large_blob_is_redirected_to_the_blobstore_and_read_from_there(berth: Berth) -> None:
    with berth.client() as client:
        _push(client, "e2e/direct", BIG, BIG_DIGEST)
        answer = client.get(f"/v2/e2e/direct/blobs/{BIG_DIGEST}")
        assert answer.status_code == 307
        assert answer.headers["Docker-Content-Digest"] == BIG_DIGEST
        location = answer.headers["Location"]
        assert location.startswith(f"http://127.0.0.1:{berth.blobstore_http_port}/blobs/e2e/direct/{BIG_DIGEST}?")

        got = httpx.get(location, timeout=30)
        assert got.status_code == 200
        assert got.content == BIG
        assert got.headers["Docker-Content-Digest"] == BIG_DIGEST
        assert got.headers["Content-Length"] == str(len(BIG))
        assert got.headers["Accept-Ranges"] == "bytes"
        assert _direct_read_bytes(berth) >= len(BIG)

        # A client following redirects sees one blob read, whole.
        followed = client.get(f"/v2/e2e/direct/blobs/{BIG_DIGEST}", follow_redirects=True)
        assert followed.status_code == 200 and sha256(followed.content) == BIG_DIGEST

        head = httpx.head(location)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["Content-Length"] == str(len(BIG))

        # HEAD and ranged GETs at the gateway are answered there, as before.
        assert client.head(f"/v2/e2e/direct/blobs/{BIG_DIGEST}").status_code == 200
        ranged = client.get(f"/v2/e2e/direct/blobs/{BIG_DIGEST}", headers={"Range": "bytes=10-19"})
        assert ranged.status_code == 206 and ranged.content == BIG[10:20]


def test_ranges_at_the_blobstore_follow_the_gateways_rules(berth: Berth) -> None:
    with berth.client() as client:
        _push(client, "e2e/direct", BIG, BIG_DIGEST)
        location = client.get(f"/v2/e2e/direct/blobs/{BIG_DIGEST}").headers["Location"]
    part = httpx.get(location, headers={"Range": "bytes=1048570-1048589"})
    assert part.status_code == 206
    assert part.content == BIG[1048570:1048590]
    assert part.headers["Content-Range"] == f"bytes 1048570-1048589/{len(BIG)}"
    tail = httpx.get(location, headers={"Range": "bytes=-5"})
    assert tail.status_code == 206 and tail.content == BIG[-5:]
    beyond = httpx.get(location, headers={"Range": f"bytes={len(BIG)}-"})
    assert beyond.status_code == 416
    assert beyond.headers["Content-Range"] == f"bytes */{len(BIG)}"
    assert beyond.json()["errors"][0]["code"] == "RANGE_INVALID"


def test_small_blobs_are_streamed_and_do_not_turn_redirects_off(berth: Berth) -> None:
    with berth.client() as client:
        _push(client, "e2e/direct", SMALL, SMALL_DIGEST)
        _push(client, "e2e/direct", BIG, BIG_DIGEST)
        small = client.get(f"/v2/e2e/direct/blobs/{SMALL_DIGEST}")
        assert small.status_code == 200 and small.content == SMALL
        assert client.get(f"/v2/e2e/direct/blobs/{BIG_DIGEST}").status_code == 307


@pytest.mark.parametrize("tamper", ["signature", "expires", "repository", "digest"])
def test_a_url_not_signed_for_the_request_is_denied(berth: Berth, tamper: str) -> None:
    other = b"another large blob " * 70000
    other_digest = "sha256:" + hashlib.sha256(other).hexdigest()
    with berth.client() as client:
        _push(client, "e2e/direct", BIG, BIG_DIGEST)
        _push(client, "e2e/other", other, other_digest)
        location = client.get(f"/v2/e2e/direct/blobs/{BIG_DIGEST}").headers["Location"]
    parts = urlsplit(location)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    path = parts.path
    if tamper == "signature":
        query["signature"] = ("A" if query["signature"][0] != "A" else "B") + query["signature"][1:]
    elif tamper == "expires":
        query["expires"] = str(int(query["expires"]) + 3600)
    elif tamper == "repository":  # the same signature for a repository it was not signed for
        path = path.replace("/e2e/direct/", "/e2e/other/")
    else:
        path = path.replace(BIG_DIGEST, other_digest)
    answer = httpx.get(f"{parts.scheme}://{parts.netloc}{path}", params=query)
    assert answer.status_code == 403
    assert answer.json()["errors"][0]["code"] == "DENIED"
    assert BIG[:64] not in answer.content


def test_a_blob_deleted_from_the_repository_is_not_served_by_an_earlier_url(berth: Berth) -> None:
    with berth.client() as client:
        _push(client, "e2e/direct", BIG, BIG_DIGEST)
        location = client.get(f"/v2/e2e/direct/blobs/{BIG_DIGEST}").headers["Location"]
        assert httpx.get(location).status_code == 200
        assert client.delete(f"/v2/e2e/direct/blobs/{BIG_DIGEST}").status_code == 202
    gone = httpx.get(location)
    assert gone.status_code == 404
    assert gone.json()["errors"][0]["code"] == "BLOB_UNKNOWN"


def test_access_is_checked_before_the_redirect(tmp_path: Path) -> None:
    instance = Berth(tmp_path)
    write_htpasswd(tmp_path / "htpasswd", {"alice": "secret-pass"})
    instance.env.update(
        _env(
            instance, REGISTRY_AUTH="htpasswd", REGISTRY_AUTH_HTPASSWD_REALM="Berth", REGISTRY_AUTH_HTPASSWD_PATH=str(tmp_path / "htpasswd")
        )
    )
    instance.start()
    try:
        with berth_client(instance, ("alice", "secret-pass")) as client:
            _push(client, "e2e/direct", BIG, BIG_DIGEST)
            assert client.get(f"/v2/e2e/direct/blobs/{BIG_DIGEST}").status_code == 307
        with instance.client() as anonymous:
            denied = anonymous.get(f"/v2/e2e/direct/blobs/{BIG_DIGEST}")
            assert denied.status_code == 401
            assert "Location" not in denied.headers
    finally:
        instance.stop()


def berth_client(instance: Berth, auth: tuple[str, str]) -> httpx.Client:
    return httpx.Client(base_url=instance.url, timeout=60, auth=auth)


@pytest.mark.skopeo
def test_skopeo_pulls_large_layers_through_the_blobstore(berth: Berth, tmp_path: Path) -> None:
    image = single_image(tmp_path / "src", seed="direct", size=2 * 1024 * 1024)
    remote = f"docker://{berth.host}/e2e/direct-skopeo:v1"
    copy(image.ref(), remote)
    before = _direct_read_bytes(berth)
    copy(remote, f"oci:{tmp_path / 'back'}:v1")
    assert layout_blob_digests(tmp_path / "back") == layout_blob_digests(tmp_path / "src")
    for digest in layout_blob_digests(tmp_path / "back"):
        assert sha256((tmp_path / "back" / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()) == digest
    assert _direct_read_bytes(berth) - before >= 2 * 1024 * 1024


@pytest.mark.parametrize(("secret", "status"), [("test-secret", 200), ("another-secret", 403)])
def test_a_url_one_blobstore_signed_is_served_by_a_replica_sharing_the_secret(
    berth: Berth, tmp_path: Path, secret: str, status: int
) -> None:
    replica = Berth(tmp_path / "replica")
    replica.workdir.mkdir()
    replica.env.update(
        REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=str(berth.data_dir),  # the same storage
        REGISTRY_HTTP_SECRET=secret,
        REGISTRY_BLOBSTORE_PUBLIC_URL=f"http://127.0.0.1:{replica.blobstore_http_port}",
    )
    replica.start("blobstore")
    try:
        with berth.client() as client:
            _push(client, "e2e/direct", BIG, BIG_DIGEST)
            location = client.get(f"/v2/e2e/direct/blobs/{BIG_DIGEST}").headers["Location"]
        elsewhere = location.replace(f":{berth.blobstore_http_port}/", f":{replica.blobstore_http_port}/")
        answer = httpx.get(elsewhere, timeout=30)
        assert answer.status_code == status
        assert (answer.content == BIG) is (status == 200)
    finally:
        replica.stop()
