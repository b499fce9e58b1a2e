"""The gateways' Redis metadata cache (cache_lru), with a real redis-server and real Berth processes.

Round trips are counted by wrapping the real blobstore client of an in-process gateway (which talks
to a real blobstore process); everything about sharing, invalidation and outages runs against
gateway processes that share one blobstore and one Redis.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from starlette.testclient import TestClient

from services.common import config
from services.common.metadata_cache import PREFIX
from services.common.rpc import blobstore_pb2 as pb
from services.gateway.app import create_app
from services.gateway.cache import MetadataCache, outage
from tests.images import sha256
from tests.support.processes import Berth
from tests.support.redis import RedisServer, TCPProxy, start_redis
from tests.support.registry import checked_client, push_blob, push_image


def outage_warnings(log: str) -> int:
    return sum(1 for line in log.splitlines() if "metadata cache" in line and "unavailable" in line)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(redis_server: RedisServer) -> Iterator[TCPProxy]:
    p = TCPProxy(redis_server.port).start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Berth]:
    """The blobstore every gateway of this module shares."""
    berth = Berth(tmp_path_factory.mktemp("store")).start("blobstore")
    yield berth
    berth.stop()


def gateway(store: Berth, workdir: Path, env: dict[str, str]) -> Berth:
    """A gateway process of its own on the shared blobstore."""
    workdir.mkdir(parents=True, exist_ok=True)
    return Berth(workdir, env=env, grpc_port=store.grpc_port).start("gateway")


@pytest.fixture(scope="module")
def gateways(
    store: Berth, redis_server: RedisServer, proxy: TCPProxy, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Berth]]:
    """one and two: Redis directly; cut: through the proxy, so a test can take Redis away from it."""
    through_proxy = {**redis_server.env, "REGISTRY_CACHE_LRU_PORT": str(proxy.port)}
    started = {
        "one": gateway(store, tmp_path_factory.mktemp("gw-one"), redis_server.env),
        "two": gateway(store, tmp_path_factory.mktemp("gw-two"), redis_server.env),
        "cut": gateway(store, tmp_path_factory.mktemp("gw-cut"), through_proxy),
    }
    yield started
    for berth in started.values():
        berth.stop()


@pytest.fixture()
def http(gateways: dict[str, Berth]) -> Iterator[dict[str, httpx.Client]]:
    clients = {name: checked_client(berth.url) for name, berth in gateways.items()}
    yield clients
    for c in clients.values():
        c.close()


def cached_keys(r: redis.Redis, repo: str) -> set[str]:
    return {k.decode() for k in r.scan_iter(match=f"{PREFIX}*:{repo}:*")}


def wait_until(condition: Callable[[], bool], timeout: float = 15, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def manifest(c: httpx.Client, repo: str, reference: str) -> httpx.Response:
    return c.get(f"/v2/{repo}/manifests/{reference}", headers={"Accept": "*/*"})


def blob(c: httpx.Client, repo: str, digest: str) -> httpx.Response:
    return c.head(f"/v2/{repo}/blobs/{digest}")


def layer_of(payload: bytes) -> str:
    return str(json.loads(payload)["layers"][0]["digest"])


# Round trips, counted on the real client of in-process gateways


class Counting:
    """The real blobstore client; counts the calls made through it, by method."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if name.startswith("_") or not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted


@contextmanager
def in_process(store: Berth, cache_env: dict[str, str]) -> Iterator[tuple[TestClient, Counter[str]]]:
    """A gateway app in this process on the module's blobstore, and the calls it makes to it."""
    settings = config.load(environ={**store.environment(), **cache_env})
    app = create_app(settings)
    with TestClient(app) as c:
        gw = app.state.gateway
        if cache_env:
            gw.blobstore.client = counting = Counting(gw.blobstore.client)
        else:
            gw.blobstore = counting = Counting(gw.blobstore)
        yield c, counting.calls


@pytest.mark.parametrize("cached", [False, True], ids=["without-cache", "with-cache"])
def test_repeated_reads_are_served_from_the_cache(store: Berth, redis_server: RedisServer, repo: str, cached: bool) -> None:
    reads = 5
    with in_process(store, redis_server.env if cached else {}) as (c, calls):
        digest, payload = push_image(c, repo, "v1")
        layer = layer_of(payload)
        calls.clear()
        for _ in range(reads):
            r = manifest(c, repo, "v1")
            assert r.status_code == 200 and r.content == payload and r.headers["docker-content-digest"] == digest
        for _ in range(reads):
            r = blob(c, repo, layer)
            assert r.status_code == 200 and r.headers["content-length"] == str(len(f"layer of {repo}:v1"))
        for _ in range(reads):
            assert manifest(c, repo, digest).status_code == 200
        if cached:
            # The first read by tag fills what a read by digest needs as well.
            assert calls == {"get_manifest": 1, "stat_blob": 1}
        else:
            assert calls == {"get_manifest": 2 * reads, "stat_blob": reads}

    if cached:
        # Another gateway on the same Redis: every answer is already there.
        with in_process(store, redis_server.env) as (c, calls):
            assert manifest(c, repo, "v1").content == payload
            assert blob(c, repo, layer).status_code == 200
            assert calls == {}


def served_rpcs(store: Berth) -> Counter[str]:
    """What the blobstore process says it served (its /metrics), by method."""
    text = httpx.get(f"http://127.0.0.1:{store.blobstore_http_port}/metrics", timeout=10).text
    served: Counter[str] = Counter()
    for labels, value in re.findall(r"^berth_blobstore_rpc_duration_seconds_count\{([^}]*)\} (\S+)$", text, re.MULTILINE):
        found = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if found.get("side") == "server":
            served[found["method"]] += int(float(value))
    return served


def test_gateway_processes_spare_the_blobstore(store: Berth, http: dict[str, httpx.Client], repo: str) -> None:
    """The same, seen from the blobstore process: repeated reads through two cached gateways."""
    digest, payload = push_image(http["one"], repo, "v1")
    layer = layer_of(payload)
    before = served_rpcs(store)
    for c in (http["one"], http["two"]) * 5:
        assert manifest(c, repo, "v1").content == payload
        assert manifest(c, repo, digest).status_code == 200
        assert blob(c, repo, layer).status_code == 200
    served = served_rpcs(store) - before
    assert served == {"GetManifest": 1, "StatBlob": 1}, served


def test_large_manifests_are_not_cached(store: Berth, redis_server: RedisServer, repo: str) -> None:
    env = {**redis_server.env, "REGISTRY_CACHE_LRU_MAX_ITEM_SIZE": "1024"}
    with in_process(store, env) as (c, calls):
        _, payload = push_image(c, repo, "big", annotations={"padding": "x" * 2048})
        calls.clear()
        for _ in range(3):
            assert manifest(c, repo, "big").content == payload
        assert calls == {"get_manifest": 3}
        assert not cached_keys(redis_server.client(), repo)


# The fill protocol, against Redis directly


def test_a_fill_cannot_undo_an_invalidation(redis_server: RedisServer, repo: str) -> None:
    settings = config.load(environ=redis_server.env).cache_lru
    old = pb.Manifest(digest=sha256(b"old"), payload=b"old")

    async def scenario() -> None:
        cache = MetadataCache(settings)
        try:
            # A read misses, the blobstore answers (the old digest), a write lands and invalidates,
            # and only then does the read try to fill: refused.
            found, token = await cache.manifest(repo, "v1")
            assert found is None and token
            await cache.invalidate(repo, "tag", "v1")
            await cache.fill_manifest(repo, "v1", old, token)
            assert (await cache.manifest(repo, "v1"))[0] is None

            # A read that began after the write fills.
            _, token = await cache.manifest(repo, "v1")
            assert token
            await cache.fill_manifest(repo, "v1", old, token)
            assert (await cache.manifest(repo, "v1"))[0] == old

            # Blob links likewise.
            _, token = await cache.blob(repo, old.digest)
            assert token
            await cache.invalidate(repo, "blob", old.digest)
            await cache.fill_blob(repo, pb.BlobInfo(digest=old.digest, size=3), token)
            assert (await cache.blob(repo, old.digest))[0] is None

            # An evicted token refuses fills too (LRU may evict any key).
            _, token = await cache.manifest(repo, "v2")
            assert token
            redis_server.client().delete(f"{PREFIX}tok:{repo}")
            await cache.fill_manifest(repo, "v2", old, token)
            assert (await cache.manifest(repo, "v2"))[0] is None

            # Every key has a TTL.
            r = redis_server.client()
            assert all(r.ttl(k) > 0 for k in r.scan_iter(match=f"{PREFIX}*"))
        finally:
            await cache.aclose()

    asyncio.run(scenario())


def test_a_write_the_gateway_gave_up_on_invalidates_again_when_it_must_have_ended(
    redis_server: RedisServer, repo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The blobstore may finish a delete after the gateway's call timed out, and a reader may
    refill the old answer in between: the write invalidates once more after the call timeout."""
    from services.common.errors import UNAVAILABLE, RegistryError
    from services.gateway.cache import blobstore as cached_blobstore

    monkeypatch.setattr(cached_blobstore, "_LATE_WRITE_MARGIN", 0.0)
    settings = config.load(environ=redis_server.env).cache_lru
    old = pb.Manifest(digest=sha256(b"old"), payload=b"old")

    class TimingOut:
        """The blobstore as a gateway sees it when a delete times out but goes on there."""

        call_timeout = 0.3
        reads = 0

        async def delete_tag(self, repository: str, tag: str) -> None:
            raise RegistryError(UNAVAILABLE, {"service": "blobstore"})

        async def get_manifest(self, repository: str, reference: str) -> pb.Manifest:
            self.reads += 1
            return old  # the delete has not landed yet

    async def scenario() -> None:
        client = TimingOut()
        cache = MetadataCache(settings)
        store = cached_blobstore.CachedBlobstore(client, cache)  # type: ignore[arg-type]
        try:
            with pytest.raises(RegistryError):
                await store.delete_tag(repo, "late")
            await store.get_manifest(repo, "late")  # refilled with the old answer ...
            await store.get_manifest(repo, "late")
            assert client.reads == 1  # ... and served from the cache
            await asyncio.sleep(client.call_timeout + 0.3)
            await store.get_manifest(repo, "late")
            assert client.reads == 2  # the late invalidation dropped it
        finally:
            await cache.aclose()

    asyncio.run(scenario())


def test_what_is_missed_while_repairing_is_repaired_before_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outage, "FIRST_PROBE", 0.01)
    item = outage.Invalidation("repo", "tag", "v1")
    batches: list[list[outage.Invalidation]] = []

    async def repair(missed: list[outage.Invalidation], drop_all: bool) -> None:
        batches.append(missed)
        if len(batches) == 1:
            state.skipped(item)  # the same tag written again while the first batch is re-sent
        await asyncio.sleep(0)

    async def scenario() -> None:
        state.failed(ConnectionError("refused"), missed=item)
        assert not state.usable
        while not state.usable:
            await asyncio.sleep(0.01)

    state = outage.Outage(repair, "test")
    asyncio.run(scenario())
    assert batches == [[item], [item]]


# Several gateways, one Redis


def test_a_moved_tag_is_seen_at_once_by_another_gateway(http: dict[str, httpx.Client], redis_server: RedisServer, repo: str) -> None:
    one, two = http["one"], http["two"]
    first, _ = push_image(one, repo, "latest", layers=[b"first"])
    for _ in range(2):
        assert manifest(two, repo, "latest").headers["docker-content-digest"] == first
    assert f"{PREFIX}tag:{repo}:latest" in cached_keys(redis_server.client(), repo)

    second, _ = push_image(one, repo, "latest", layers=[b"second"])
    assert manifest(two, repo, "latest").headers["docker-content-digest"] == second


def test_tags_pushed_with_a_digest_move_at_once_everywhere(http: dict[str, httpx.Client], redis_server: RedisServer, repo: str) -> None:
    """A push by digest may move several tags: each is invalidated, and cached reads by tag say
    the digest the manifest was pushed under (sha512 here), not one computed again."""
    one, two = http["one"], http["two"]
    first, _ = push_image(one, repo, "latest", layers=[b"first"])
    push_image(one, repo, "stable", layers=[b"stable"])
    for ref in ("latest", "stable"):
        assert manifest(two, repo, ref).status_code == 200
        assert f"{PREFIX}tag:{repo}:{ref}" in cached_keys(redis_server.client(), repo)

    _, payload = push_image(one, repo, "source", layers=[b"second"])
    digest = "sha512:" + hashlib.sha512(payload).hexdigest()
    r = one.put(
        f"/v2/{repo}/manifests/{digest}",
        params=[("tag", "latest"), ("tag", "stable")],
        content=payload,
        headers={"Content-Type": json.loads(payload)["mediaType"]},
    )
    assert r.status_code == 201 and r.headers.get_list("oci-tag") == ["latest", "stable"]
    for ref in ("latest", "stable", digest):
        for _ in range(2):  # filled by the first read, served from Redis by the second
            got = manifest(two, repo, ref)
            assert (got.status_code, got.content, got.headers["docker-content-digest"]) == (200, payload, digest), ref
    assert redis_server.client().get(f"{PREFIX}tag:{repo}:latest") == digest.encode()
    assert manifest(two, repo, first).status_code == 200


def test_a_deleted_manifest_is_gone_at_once_everywhere(http: dict[str, httpx.Client], redis_server: RedisServer, repo: str) -> None:
    one, two = http["one"], http["two"]
    digest, payload = push_image(one, repo, "a")
    push_image(one, repo, "b")
    assert (
        one.put(f"/v2/{repo}/manifests/also-a", content=payload, headers={"Content-Type": json.loads(payload)["mediaType"]}).status_code
        == 201
    )
    for ref in ("a", "also-a", digest, "b"):
        assert manifest(two, repo, ref).status_code == 200
    assert f"{PREFIX}man:{repo}:{digest}" in cached_keys(redis_server.client(), repo)

    assert one.delete(f"/v2/{repo}/manifests/{digest}").status_code == 202
    # Every tag that pointed at it went with it (registry semantics), by tag and by digest.
    for ref in ("a", "also-a", digest):
        assert manifest(two, repo, ref).status_code == 404, ref
    assert manifest(two, repo, "b").status_code == 200

    # Pushed again by digest only: the old tags stay gone.
    assert (
        one.put(f"/v2/{repo}/manifests/{digest}", content=payload, headers={"Content-Type": json.loads(payload)["mediaType"]}).status_code
        == 201
    )
    assert manifest(two, repo, digest).status_code == 200
    for ref in ("a", "also-a"):
        assert manifest(two, repo, ref).status_code == 404, ref


def test_a_deleted_tag_is_gone_at_once_everywhere(http: dict[str, httpx.Client], repo: str) -> None:
    one, two = http["one"], http["two"]
    digest, _ = push_image(one, repo, "v1")
    assert (
        one.put(
            f"/v2/{repo}/manifests/v2",
            content=manifest(one, repo, "v1").content,
            headers={"Content-Type": manifest(one, repo, "v1").headers["content-type"]},
        ).status_code
        == 201
    )
    assert manifest(two, repo, "v1").status_code == 200
    assert manifest(two, repo, "v2").status_code == 200

    assert one.delete(f"/v2/{repo}/manifests/v1").status_code == 202
    assert manifest(two, repo, "v1").status_code == 404
    assert manifest(two, repo, "v2").status_code == 200
    assert manifest(two, repo, digest).status_code == 200


def test_a_deleted_blob_is_gone_at_once_everywhere(http: dict[str, httpx.Client], redis_server: RedisServer, repo: str) -> None:
    one, two = http["one"], http["two"]
    digest = push_blob(one, repo, b"a blob to delete")
    for _ in range(2):
        assert blob(two, repo, digest).status_code == 200
    assert f"{PREFIX}lnk:{repo}:{digest}" in cached_keys(redis_server.client(), repo)

    assert one.delete(f"/v2/{repo}/blobs/{digest}").status_code == 202
    assert blob(two, repo, digest).status_code == 404
    assert two.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": "bytes=0-3"}).status_code == 404


# Outages


def test_a_gateway_cut_off_from_redis_keeps_serving_and_catches_up(
    gateways: dict[str, Berth], http: dict[str, httpx.Client], proxy: TCPProxy, redis_server: RedisServer, repo: str
) -> None:
    one, cut = http["one"], http["cut"]
    r = redis_server.client()
    digest, payload = push_image(cut, repo, "old")
    layer = layer_of(payload)
    for _ in range(2):
        assert manifest(cut, repo, "old").status_code == 200
        assert blob(cut, repo, layer).status_code == 200
    before = cached_keys(r, repo)
    assert {f"{PREFIX}tag:{repo}:old", f"{PREFIX}lnk:{repo}:{layer}"} <= before
    log = gateways["cut"].log("gateway")

    proxy.cut()
    try:
        # Pushes, pulls and deletes work, each without waiting on Redis more than once.
        started = time.monotonic()
        new_digest, new_payload = push_image(cut, repo, "new")
        for _ in range(3):
            assert manifest(cut, repo, "new").content == new_payload
        assert cut.delete(f"/v2/{repo}/manifests/{digest}").status_code == 202
        assert cut.delete(f"/v2/{repo}/blobs/{layer}").status_code == 202
        assert manifest(cut, repo, "old").status_code == 404
        assert blob(cut, repo, layer).status_code == 404
        assert time.monotonic() - started < 5
        # The entries from before are still in Redis (a gateway that can reach it still serves
        # them: the bound is mutable_ttl, or until this gateway is back).
        assert f"{PREFIX}tag:{repo}:old" in cached_keys(r, repo)
        assert manifest(one, repo, "old").status_code == 200
    finally:
        proxy.restore()

    # Back: the missed invalidations are re-sent before this gateway reads from Redis again.
    def resent() -> bool:
        assert manifest(cut, repo, "old").status_code == 404
        assert blob(cut, repo, layer).status_code == 404
        return f"{PREFIX}tag:{repo}:old" not in cached_keys(r, repo)

    wait_until(resent, what="the missed invalidations")
    for c in (cut, one):
        assert manifest(c, repo, "old").status_code == 404
        assert manifest(c, repo, digest).status_code == 404
        assert blob(c, repo, layer).status_code == 404
    # ... and uses the cache again.
    wait_until(
        lambda: manifest(cut, repo, "new").status_code == 200 and f"{PREFIX}tag:{repo}:new" in cached_keys(r, repo),
        what="the cache to be filled again",
    )
    assert new_digest == manifest(one, repo, "new").headers["docker-content-digest"]
    # One warning for the whole outage.
    assert outage_warnings(gateways["cut"].log("gateway")[len(log) :]) == 1


def test_a_stopped_redis_changes_nothing_for_clients(store: Berth, tmp_path: Path, repo: str) -> None:
    servers = [start_redis(tmp_path / "redis")]
    (tmp_path / "gw").mkdir()
    berth = Berth(tmp_path / "gw", env=servers[0].env, grpc_port=store.grpc_port)
    try:
        berth.start("gateway")
        with checked_client(berth.url) as c:
            _, payload = push_image(c, repo, "v1")
            assert manifest(c, repo, "v1").status_code == 200
            assert cached_keys(servers[0].client(), repo)

            servers[0].stop()
            started = time.monotonic()
            for n in range(3):
                _, pushed = push_image(c, repo, f"down-{n}", layers=[f"layer {n}".encode()])
                assert manifest(c, repo, f"down-{n}").content == pushed
                assert blob(c, repo, layer_of(pushed)).status_code == 200
            assert manifest(c, repo, "v1").content == payload
            assert time.monotonic() - started < 5

            servers.append(start_redis(tmp_path / "redis", port=servers[0].port))
            wait_until(
                lambda: manifest(c, repo, "v1").status_code == 200 and bool(cached_keys(servers[-1].client(), repo)),
                what="the cache to be used again",
            )
        assert outage_warnings(berth.log("gateway")) == 1
        assert "Traceback" not in berth.log("gateway")
    finally:
        berth.stop()
        for server in servers:
            server.stop()


def test_every_blobstore_call_is_either_cache_aware_or_declared_harmless() -> None:
    import inspect

    from services.gateway.blobstore_client import BlobstoreClient
    from services.gateway.cache import CachedBlobstore

    calls = {name for name, member in inspect.getmembers(BlobstoreClient, inspect.iscoroutinefunction) if not name.startswith("_")}
    cache_aware = {name for name in vars(CachedBlobstore) if not name.startswith("_") and name != "PASSTHROUGH"}
    assert calls == cache_aware | CachedBlobstore.PASSTHROUGH, (
        "a blobstore call the cache does not know: wrap it in CachedBlobstore (if it reads cached data or removes "
        "anything) or add it to PASSTHROUGH"
    )
    assert not cache_aware & CachedBlobstore.PASSTHROUGH
