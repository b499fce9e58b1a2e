"""A collection tells the gateways' Redis metadata cache (cache_lru) what it removed: a blob or
manifest a gateway answered from the cache before the collection answers 404 after it, on every
gateway, whether `berth garbage-collect` or the blobstore's scheduled collection removed it. Real
redis-server, real blobstore and gateways."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from services.common.metadata_cache import PREFIX
from tests.blobstore.test_gc import blob_exists, garbage_collect, pull, store
from tests.images import OCI_MANIFEST, sha256
from tests.support.processes import Berth, free_port
from tests.support.redis import RedisServer, start_redis
from tests.support.registry import (
    checked_client,
    image_manifest,
    push_blob,
    push_image,
    push_manifest,
)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


def cached(r: redis.Redis, repo: str) -> set[str]:
    return {k.decode() for k in r.scan_iter(match=f"{PREFIX}*:{repo}:*")}


def garbage(client: httpx.Client, repo: str) -> tuple[str, str]:
    """An unreferenced blob linked in ``repo`` and an untagged manifest, each read once through
    the gateway (so the cache holds them) and read again as a cache hit."""
    orphan = push_blob(client, repo, f"nobody references me in {repo}".encode())
    config, layer = json.dumps({"untagged": repo}).encode(), f"untagged layer of {repo}".encode()
    for data in (config, layer):
        push_blob(client, repo, data)
    payload = json.dumps(image_manifest(config, [layer])).encode()
    untagged, _ = push_manifest(client, repo, sha256(payload), payload)
    for _ in range(2):
        assert client.head(f"/v2/{repo}/blobs/{orphan}").status_code == 200
        assert client.get(f"/v2/{repo}/manifests/{untagged}", headers={"Accept": OCI_MANIFEST}).status_code == 200
    return orphan, untagged


def assert_cached(r: redis.Redis, repo: str, orphan: str, untagged: str) -> None:
    keys = cached(r, repo)
    assert any(k.endswith(f"lnk:{repo}:{orphan}") for k in keys), keys
    assert any(k.endswith(f"man:{repo}:{untagged}") for k in keys), keys


def assert_gone(clients: list[httpx.Client], repo: str, orphan: str, untagged: str | None) -> None:
    for c in clients:
        assert c.head(f"/v2/{repo}/blobs/{orphan}").status_code == 404
        if untagged:
            r = c.get(f"/v2/{repo}/manifests/{untagged}", headers={"Accept": OCI_MANIFEST})
            assert r.status_code == 404, r.text


def test_offline_gc_clears_what_every_gateway_cached(tmp_path: Path, redis_server: RedisServer) -> None:
    """Two gateways on one blobstore and one Redis: both answered from the cache before; after
    `berth garbage-collect --delete-untagged` (which reads the same config) both say 404."""
    env = {"REGISTRY_STORAGE_DELETE_ENABLED": "true", **redis_server.env}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    berth = Berth(tmp_path / "a", env=env).start()
    second = Berth(tmp_path / "b", env=env, grpc_port=berth.grpc_port)
    second.start("gateway")
    try:
        with berth.client() as one, checked_client(second.url) as two:
            push_image(one, "gc/cached", "keep", layers=[b"kept layer"])
            orphan, untagged = garbage(one, "gc/cached")
            assert two.head(f"/v2/gc/cached/blobs/{orphan}").status_code == 200
            assert_cached(redis_server.client(), "gc/cached", orphan, untagged)
            result = garbage_collect(berth, "--delete-untagged")
            assert result.returncode == 0, result.stderr
            assert not blob_exists(store(berth), orphan)
            assert_gone([one, two], "gc/cached", orphan, untagged)
            pull(one, "gc/cached", "keep")
            pull(two, "gc/cached", "keep")
    finally:
        second.stop()
        berth.stop()


def test_scheduled_gc_clears_the_cache(tmp_path: Path, redis_server: RedisServer) -> None:
    berth = Berth(
        tmp_path,
        env={
            "REGISTRY_STORAGE_DELETE_ENABLED": "true",
            "REGISTRY_STORAGE_MAINTENANCE_GC_ENABLED": "true",
            "REGISTRY_STORAGE_MAINTENANCE_GC_INTERVAL": "2s",
            "REGISTRY_STORAGE_MAINTENANCE_GC_DELAY": "0",
            **redis_server.env,
        },
    ).start()
    try:
        with berth.client() as client:
            push_image(client, "gc/sched-cached", "keep", layers=[b"kept layer"])
            orphan = push_blob(client, "gc/sched-cached", b"nobody references me (scheduled)")
            assert client.head(f"/v2/gc/sched-cached/blobs/{orphan}").status_code == 200
            driver = store(berth)
            deadline = time.monotonic() + 30
            while blob_exists(driver, orphan) and time.monotonic() < deadline:
                # Keep the cache warm until the collection removes it (a hit after the fill).
                client.head(f"/v2/gc/sched-cached/blobs/{orphan}")
                time.sleep(0.2)
            assert not blob_exists(driver, orphan)
            # The invalidation follows the delete of its batch at once.
            time.sleep(0.5)
            assert_gone([client], "gc/sched-cached", orphan, None)
            pull(client, "gc/sched-cached", "keep")
    finally:
        berth.stop()


def test_gc_says_when_the_cache_could_not_be_told(tmp_path: Path) -> None:
    """cache_lru configured but unreachable: the collection is done, the exit status is 1 and the
    message says how long gateways may still answer for what was removed."""
    berth = Berth(tmp_path, env={"REGISTRY_STORAGE_DELETE_ENABLED": "true"}).start()
    try:
        with berth.client() as client:
            orphan = push_blob(client, "gc/nocache", b"nobody references me (no cache)")
        berth.env.update(REGISTRY_CACHE_LRU_HOST="127.0.0.1", REGISTRY_CACHE_LRU_PORT=str(free_port()))
        result = garbage_collect(berth)
        assert result.returncode == 1, (result.stdout, result.stderr)
        assert "cache could not be told" in result.stdout + result.stderr
        assert "mutable_ttl" in result.stdout + result.stderr
        assert not blob_exists(store(berth), orphan)
    finally:
        berth.stop()
