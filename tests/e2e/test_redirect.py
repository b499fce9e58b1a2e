"""storage_redirect: blob GETs answer 307 to a presigned URL of the store, and clients follow it."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_skopeo import copy, layout_blob_digests, sha256
from tests.images import single_image
from tests.support.processes import Berth
from tests.support.s3 import MotoServer

pytestmark = pytest.mark.skopeo


@pytest.fixture()
def s3_berth(tmp_path: Path, moto: MotoServer) -> Iterator[Berth]:
    env = {**moto.berth_env(moto.new_bucket("redirect"), rootdirectory="registry"), "REGISTRY_STORAGE_REDIRECT": "true"}
    instance = Berth(tmp_path / "berth", env=env)
    instance.workdir.mkdir()
    instance.start()
    yield instance
    instance.stop()


def image_blobs(layout: Path, manifest_digest: str) -> list[tuple[str, int]]:
    """(digest, size) of the config and layers of the layout's manifest."""
    manifest = json.loads((layout / "blobs" / "sha256" / manifest_digest.split(":")[1]).read_bytes())
    return [(d["digest"], d["size"]) for d in [manifest["config"], *manifest["layers"]]]


def test_blob_get_redirects_to_the_store_and_skopeo_pulls_through_it(s3_berth: Berth, moto: MotoServer, tmp_path: Path) -> None:
    image = single_image(tmp_path / "src", seed="redirect", size=64 * 1024)
    remote = f"docker://{s3_berth.host}/e2e/redirect:v1"
    copy(image.ref(), remote)
    blobs = image_blobs(tmp_path / "src", image.manifest_digests[0])

    with s3_berth.client() as client:
        for digest, size in blobs:
            url = f"/v2/e2e/redirect/blobs/{digest}"
            answer = client.get(url)
            assert answer.status_code == 307
            assert answer.headers["Docker-Content-Digest"] == digest
            location = answer.headers["Location"]
            assert location.startswith(f"{moto.endpoint}/")
            assert sha256(httpx.get(location, timeout=30).content) == digest

            head = client.head(url)
            assert head.status_code == 200
            assert int(head.headers["Content-Length"]) == size
            assert "Location" not in head.headers

            # A range is answered here, not by the store.
            ranged = client.get(url, headers={"Range": "bytes=0-9"})
            assert ranged.status_code == 206
            assert len(ranged.content) == 10

        assert client.get(f"/v2/e2e/redirect/blobs/sha256:{'0' * 64}").status_code == 404

    signed_before = [r for r in moto.requests() if "Signature=" in r]
    copy(remote, f"oci:{tmp_path / 'back'}:v1")
    assert layout_blob_digests(tmp_path / "back") == layout_blob_digests(tmp_path / "src")
    for digest in layout_blob_digests(tmp_path / "back"):
        data = (tmp_path / "back" / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()
        assert sha256(data) == digest
    # skopeo fetched each blob from the store itself, by the signed URL.
    signed = [r for r in moto.requests() if "Signature=" in r][len(signed_before) :]
    for digest, _ in blobs:
        assert any(digest.split(":")[1] in line and line.startswith("GET ") for line in signed), digest


def test_redirect_on_a_driver_without_urls_streams_the_blob(fresh_berth: Berth) -> None:
    """No URL to give: a small blob comes back in the one short call that asked (OpenBlob), a
    larger one is streamed after it (ReadBlob)."""
    fresh_berth.env["REGISTRY_STORAGE_REDIRECT"] = "true"
    fresh_berth.start()
    small = b"streamed, not redirected"
    large = os.urandom((1 << 20) + 1)  # one byte over blobstore.chunk_size
    with fresh_berth.client() as client:
        for data in (small, large):
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            pushed = client.post(
                "/v2/e2e/plain/blobs/uploads/",
                params={"digest": digest},
                content=data,
                headers={"Content-Type": "application/octet-stream"},
            )
            assert pushed.status_code == 201
            before = _calls(fresh_berth)
            for _ in range(3):
                answer = client.get(f"/v2/e2e/plain/blobs/{digest}")
                assert answer.status_code == 200
                assert answer.content == data
                assert answer.headers["Docker-Content-Digest"] == digest
                assert answer.headers["Content-Length"] == str(len(data))
            after = _calls(fresh_berth)
            assert after["OpenBlob"] - before["OpenBlob"] == 3
            assert after["ReadBlob"] - before["ReadBlob"] == (0 if data is small else 3)


def _calls(berth: Berth) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{berth.blobstore_http_port}/metrics").text
    counts = {"OpenBlob": 0.0, "ReadBlob": 0.0}
    for method in counts:
        prefix = f'berth_blobstore_rpc_duration_seconds_count{{code="OK",method="{method}",side="server"}} '
        counts[method] = sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))
    return counts
