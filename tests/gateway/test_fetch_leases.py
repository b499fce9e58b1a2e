"""Fetch leases (services/gateway/proxy/fetch_leases.py) on a real redis-server: one replica holds
a blob's lease at a time, renews it while it fetches, and a waiting replica goes on when the blob is
stored or takes over when the lease goes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from services.gateway.proxy import fetch_leases
from services.gateway.proxy.fetch_leases import FetchLeases, lease_key
from tests.support.redis import RedisServer, start_redis

REPO, DIGEST = "hub/team/app", "sha256:" + "a" * 64


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


def leases(server: RedisServer) -> FetchLeases:
    return FetchLeases(aioredis.Redis(host="127.0.0.1", port=server.port))


def test_one_replica_at_a_time_holds_a_blobs_lease(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        one, two = leases(redis_server), leases(redis_server)
        held = await one.take(REPO, DIGEST)
        assert held is not None
        assert await two.take(REPO, DIGEST) is None
        assert await two.take(REPO, "sha256:" + "b" * 64) is not None  # another blob: its own lease
        await held.release()
        again = await two.take(REPO, DIGEST)
        assert again is not None
        await held.release()  # a stale release does not free another replica's lease
        assert await one.held(REPO, DIGEST)
        await again.release()
        assert not await one.held(REPO, DIGEST)

    asyncio.run(scenario())


def test_a_lease_is_renewed_while_held_and_lapses_when_its_replica_dies(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch_leases, "LEASE", 0.6)
    monkeypatch.setattr(fetch_leases, "RENEW_EVERY", 0.1)

    async def scenario() -> None:
        one, two = leases(redis_server), leases(redis_server)
        held = await one.take(REPO, DIGEST)
        assert held is not None
        await asyncio.sleep(1.5)  # beyond the lease: renewed meanwhile
        assert await two.take(REPO, DIGEST) is None
        assert held._renewing is not None
        held._renewing.cancel()  # the replica "dies": no renewals, no release
        await asyncio.sleep(0.8)
        assert await two.take(REPO, DIGEST) is not None

    asyncio.run(scenario())
    redis_server.client().delete(lease_key(REPO, DIGEST))


def test_a_waiting_replica_goes_on_when_the_blob_is_stored_or_takes_over_when_the_lease_goes(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        one, two = leases(redis_server), leases(redis_server)
        stored = False

        async def is_stored() -> bool:
            return stored

        held = await one.take(REPO, DIGEST)
        assert held is not None
        waiting = asyncio.ensure_future(two.claim(REPO, DIGEST, is_stored))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        stored = True
        assert await waiting is None  # stored elsewhere: read it from the store
        stored = False
        waiting = asyncio.ensure_future(two.claim(REPO, DIGEST, is_stored))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await held.release()  # the fetch failed: the waiter fetches itself
        taken = await asyncio.wait_for(waiting, 5)
        assert taken is not None
        await taken.release()

    asyncio.run(scenario())


def test_without_redis_every_replica_fetches_on_its_own(tmp_path: Path) -> None:
    async def scenario() -> None:
        nowhere = FetchLeases(aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5))
        lease = await nowhere.take(REPO, DIGEST)
        assert lease is not None  # coordinates nothing, holds
        await lease.release()

    asyncio.run(scenario())
