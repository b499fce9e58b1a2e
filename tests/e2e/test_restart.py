"""State that must outlive a process: uploads resume across a blobstore restart, and any gateway
with the same secret continues an upload another gateway started."""

from __future__ import annotations

import hashlib
import os
import time

from tests.support.processes import Berth, free_port


def test_chunked_upload_resumes_after_blobstore_restart(fresh_berth: Berth) -> None:
    fresh_berth.start()
    first, second = os.urandom(300_000), os.urandom(200_000)
    digest = "sha256:" + hashlib.sha256(first + second).hexdigest()
    with fresh_berth.client() as client:
        location = client.post("/v2/resume/me/blobs/uploads/").headers["location"]
        r = client.patch(location, content=first, headers={"Content-Range": f"0-{len(first) - 1}"})
        assert r.status_code == 202
        location = r.headers["location"]

        fresh_berth.stop("blobstore")
        fresh_berth.start("blobstore")

        status = client.get(location)
        assert status.status_code == 204
        assert status.headers["range"] == f"0-{len(first) - 1}"
        end = len(first) + len(second) - 1
        r = client.patch(location, content=second, headers={"Content-Range": f"{len(first)}-{end}"})
        assert r.status_code == 202
        # The running hash died with the old process: commit re-hashes what is stored.
        r = client.put(f"{r.headers['location']}&digest={digest}")
        assert r.status_code == 201, r.text
        assert client.get(f"/v2/resume/me/blobs/{digest}").content == first + second


def test_upload_moves_between_gateways_sharing_a_secret(fresh_berth: Berth) -> None:
    fresh_berth.start()
    other = Berth(fresh_berth.workdir, http_port=free_port(), grpc_port=fresh_berth.grpc_port)
    other.start("gateway")
    try:
        data = os.urandom(100_000)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with fresh_berth.client() as one, other.client() as two:
            location = one.post("/v2/hop/blobs/uploads/").headers["location"]
            moved = location.replace(fresh_berth.host, other.host)
            r = two.patch(moved, content=data[:60_000])
            assert r.status_code == 202
            r = one.put(f"{r.headers['location'].replace(other.host, fresh_berth.host)}&digest={digest}", content=data[60_000:])
            assert r.status_code == 201, r.text
            assert two.get(f"/v2/hop/blobs/{digest}").content == data
    finally:
        other.stop()


def test_path_prefix_is_served_and_used_in_locations(tmp_path) -> None:
    berth = Berth(tmp_path, env={"REGISTRY_HTTP_PREFIX": "/registry"})
    berth.start()
    try:
        with berth.client() as client:
            assert client.get("/registry/v2/").status_code == 200
            r = client.post("/registry/v2/pre/fixed/blobs/uploads/")
            assert r.status_code == 202
            assert r.headers["location"].startswith(f"{berth.url}/registry/v2/pre/fixed/blobs/uploads/")
            assert client.patch(r.headers["location"], content=b"abc").status_code == 202
            assert client.get("/v2/").status_code == 404
    finally:
        berth.stop()


def test_blobstore_down_is_503_without_internal_addresses(fresh_berth: Berth) -> None:
    fresh_berth.env["REGISTRY_BLOBSTORE_CALL_TIMEOUT"] = "1"
    fresh_berth.start()
    fresh_berth.stop("blobstore")
    with fresh_berth.client() as client:
        digest = "sha256:" + "0" * 64
        for method, path in (
            ("GET", "/v2/a/manifests/v1"),
            ("GET", "/v2/_catalog"),
            ("GET", f"/v2/a/blobs/{digest}"),
            ("POST", f"/v2/a/blobs/uploads/?digest={digest}"),
        ):
            r = client.request(method, path)
            assert r.status_code == 503, r.text
            assert r.json()["errors"][0]["code"] == "UNAVAILABLE"
            assert str(fresh_berth.grpc_port) not in r.text
        # Starting an upload asks nothing of the blobstore (services/blobstore/uploads.py): its
        # first bytes find it down.
        r = client.post("/v2/a/blobs/uploads/")
        assert r.status_code == 202, r.text
        r = client.put(f"{r.headers['location']}&digest=sha256:{hashlib.sha256(b'x').hexdigest()}", content=b"x")
        assert r.status_code == 503 and r.json()["errors"][0]["code"] == "UNAVAILABLE", r.text
    # Back at once: the gateway reconnects within about a second (its backoff's ceiling) and waits
    # for it; each try below is bounded by the 1 s call timeout.
    fresh_berth.start("blobstore")
    started = time.monotonic()
    with fresh_berth.client() as client:
        while (status := client.get("/v2/_catalog").status_code) != 200 and time.monotonic() - started < 3:
            pass
        assert status == 200
