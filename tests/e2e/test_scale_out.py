"""Two gateways and two blobstores on one shared store, no sticky sessions: each gateway talks to its
own blobstore, so a request landing on the other gateway also lands on the other blobstore.

Run on a shared filesystem folder, and on S3 with a shared Redis metadata cache (the scale-out
configuration of `make run-s3`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.images import single_image
from tests.support.processes import Berth
from tests.support.redis import start_redis
from tests.support.registry import push_blob, push_image, push_manifest
from tests.support.s3 import MotoServer

# S3 parts other than the last are at least 5 MiB: chunks this size make every PATCH a real part.
CHUNK = 5 << 20


@dataclass
class Pair:
    one: Berth
    two: Berth

    def clients(self) -> tuple[httpx.Client, httpx.Client]:
        return self.one.client(), self.two.client()

    def on_other(self, location: str, source: Berth, target: Berth) -> str:
        return location.replace(source.host, target.host)


@pytest.fixture(params=["filesystem", "s3+redis"])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pair]:
    # Only configuration is shared (and the store, and Redis when configured).
    shared = {"REGISTRY_HTTP_SECRET": "one-secret-for-every-gateway"}
    redis = None
    if request.param == "filesystem":
        shared["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"] = str(tmp_path / "shared-store")
    else:
        moto: MotoServer = request.getfixturevalue("moto")
        shared.update(moto.berth_env(moto.new_bucket("scale-out")))
        redis = start_redis(tmp_path / "redis")
        shared.update(redis.env)
    one = Berth(tmp_path / "one", env=dict(shared))
    two = Berth(tmp_path / "two", env=dict(shared))
    for berth in (one, two):
        berth.workdir.mkdir()
        berth.start("blobstore", "gateway")
    try:
        yield Pair(one, two)
    finally:
        one.stop()
        two.stop()
        if redis is not None:
            redis.stop()


def test_chunked_upload_alternates_between_gateways_and_blobstores(pair: Pair) -> None:
    chunks = [os.urandom(CHUNK) for _ in range(3)] + [os.urandom(12_345)]
    data = b"".join(chunks)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    one, two = pair.clients()
    with one, two:
        location = one.post("/v2/scale/chunked/blobs/uploads/").headers["location"]
        offset = 0
        for i, chunk in enumerate(chunks[:-1]):
            client, here, there = (two, pair.two, pair.one) if i % 2 == 0 else (one, pair.one, pair.two)
            source = pair.one if here is pair.two else pair.two
            location = pair.on_other(location, source, here)
            r = client.patch(location, content=chunk, headers={"Content-Range": f"{offset}-{offset + len(chunk) - 1}"})
            assert r.status_code == 202, r.text
            offset += len(chunk)
            assert r.headers["range"] == f"0-{offset - 1}"
            location = r.headers["location"]
            # Progress is visible through the other gateway (and its blobstore) at once.
            status = (one if client is two else two).get(pair.on_other(location, here, there))
            assert status.status_code == 204
            assert status.headers["range"] == f"0-{offset - 1}"
        # The last PATCH went through gateway two (i = 2): finish through gateway one.
        r = one.put(f"{pair.on_other(location, pair.two, pair.one)}&digest={digest}", content=chunks[-1])
        assert r.status_code == 201, r.text
        for client in (one, two):
            got = client.get(f"/v2/scale/chunked/blobs/{digest}", follow_redirects=True)
            assert got.status_code == 200
            assert hashlib.sha256(got.content).hexdigest() == digest.split(":")[1]


@pytest.mark.skopeo
@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed (make tools)")
def test_skopeo_pushes_through_one_and_pulls_through_the_other(pair: Pair, tmp_path: Path) -> None:
    image = single_image(tmp_path / "src", seed="scale-out", size=3 << 20)
    flags = ["--quiet", "--src-tls-verify=false", "--dest-tls-verify=false"]
    subprocess.run(["skopeo", "copy", *flags, image.ref(), f"docker://{pair.one.host}/scale/app:v1"], check=True, timeout=300)
    subprocess.run(
        ["skopeo", "copy", *flags, f"docker://{pair.two.host}/scale/app:v1", f"oci:{tmp_path / 'back'}:v1"], check=True, timeout=300
    )
    back = {p.name for p in (tmp_path / "back" / "blobs" / "sha256").iterdir()}
    assert back == {p.name for p in (tmp_path / "src" / "blobs" / "sha256").iterdir()}
    for path in (tmp_path / "back" / "blobs" / "sha256").iterdir():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name


def test_writes_and_deletes_through_one_are_seen_through_the_other_at_once(pair: Pair) -> None:
    one, two = pair.clients()
    with one, two:
        first, _ = push_image(one, "scale/del", "v1", layers=[b"layer one"])
        second, second_payload = push_image(one, "scale/del", "v2", layers=[b"layer two"])
        layer = "sha256:" + hashlib.sha256(b"layer two").hexdigest()
        # Read everything through gateway two first, so a cache (when configured) holds it.
        for _ in range(2):
            assert two.get("/v2/scale/del/manifests/v1").headers["docker-content-digest"] == first
            assert two.head(f"/v2/scale/del/manifests/{second}").status_code == 200
            assert two.head(f"/v2/scale/del/blobs/{layer}").status_code == 200

        # A tag moved through one ...
        push_manifest(one, "scale/del", "v1", second_payload)
        assert two.get("/v2/scale/del/manifests/v1").headers["docker-content-digest"] == second
        # ... a tag deleted through one ...
        assert one.delete("/v2/scale/del/manifests/v2").status_code == 202
        assert two.get("/v2/scale/del/manifests/v2").status_code == 404
        # ... a manifest deleted through one (and the tag pointing at it) ...
        assert one.delete(f"/v2/scale/del/manifests/{second}").status_code == 202
        assert two.head(f"/v2/scale/del/manifests/{second}").status_code == 404
        assert two.get("/v2/scale/del/manifests/v1").status_code == 404
        # ... and a blob deleted through one: all gone through two at once.
        assert one.delete(f"/v2/scale/del/blobs/{layer}").status_code == 202
        assert two.head(f"/v2/scale/del/blobs/{layer}").status_code == 404
        assert two.get(f"/v2/scale/del/blobs/{layer}").status_code == 404
        assert two.get("/v2/scale/del/tags/list").json()["tags"] in (None, [])


def _served(berth: Berth, method: str) -> float:
    """Calls of ``method`` this blobstore has served, from its own /metrics."""
    text = httpx.get(f"http://127.0.0.1:{berth.blobstore_http_port}/metrics").text
    prefix = f'berth_blobstore_rpc_duration_seconds_count{{code="OK",method="{method}",side="server"}} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


# Without a cache: it would answer the repeated reads itself.
@pytest.mark.parametrize("pair", ["filesystem"], indirect=True)
def test_one_gateway_spreads_calls_over_every_blobstore_its_target_names(pair: Pair, tmp_path: Path) -> None:
    balanced = Berth(
        tmp_path / "balanced",
        env={
            **pair.one.env,
            # gRPC's own resolver syntax for a fixed list; dns:///name:port works the same with many records.
            "REGISTRY_BLOBSTORE_TARGET": f"ipv4:127.0.0.1:{pair.one.grpc_port},127.0.0.1:{pair.two.grpc_port}",
        },
    )
    balanced.workdir.mkdir()
    balanced.start("gateway")
    try:
        with balanced.client() as client:
            digest = push_blob(client, "scale/balanced", b"spread me")
            before = _served(pair.one, "StatBlob"), _served(pair.two, "StatBlob")
            for _ in range(20):
                assert client.head(f"/v2/scale/balanced/blobs/{digest}").status_code == 200
            after = _served(pair.one, "StatBlob"), _served(pair.two, "StatBlob")
        assert after[0] - before[0] >= 5 and after[1] - before[1] >= 5, (before, after)
    finally:
        balanced.stop()
