"""One upstream download per blob across gateway replicas, when they share Redis (``cache_lru``).

Within one gateway, clients of a blob join its running fetch (``blobfetch``). Across replicas the
gateway that fetches holds a lease in Redis: a key with a short expiry that it renews while the
fetch runs and deletes when it ends. A replica that finds the lease taken does not download:
it waits until the blob is stored (its clients then read it from the store) or until the lease is
gone, a fetch that failed or a replica that died, and then tries to take it itself.

Redis only coordinates; it never decides what is served. When Redis fails, a gateway fetches on
its own (the blobstore's atomic, digest-checked commit makes a second download harmless).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from types import TracebackType

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("berth.gateway.proxy")

# Every lease key starts with it; bump the version if what a key holds changes.
PREFIX = "berth:fetch1:"
# Seconds a lease lives unless renewed, and between renewals: a dead replica's lease goes this soon.
LEASE = 10.0
RENEW_EVERY = LEASE / 3
# Seconds between two looks at the store (and the lease) while another replica fetches.
POLL = 0.1

_FAILURES = (RedisError, OSError, asyncio.TimeoutError)
# Extends, or deletes, a lease only while it still holds this replica's token.
_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def lease_key(repository: str, digest: str) -> str:
    return f"{PREFIX}{repository}@{digest}"


class Lease:
    """The right to fetch one blob; renewed in the background until ``release``. A lease with no
    key (Redis failed) coordinates nothing and always holds."""

    def __init__(self, leases: FetchLeases | None, key: str, token: str) -> None:
        self._leases = leases
        self.key = key
        self.token = token
        self._renewing: asyncio.Task[None] | None = None
        if leases is not None:
            self._renewing = asyncio.ensure_future(self._renew(leases))

    async def _renew(self, leases: FetchLeases) -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY)
            try:
                await leases.redis.eval(_RENEW, 1, self.key, self.token, int(LEASE * 1000))
            except _FAILURES as exc:
                log.warning("could not renew the fetch lease %s: %s", self.key, exc)

    async def release(self) -> None:
        if self._renewing is not None:
            self._renewing.cancel()
        if self._leases is None:
            return
        try:
            await self._leases.redis.eval(_RELEASE, 1, self.key, self.token)
        except _FAILURES as exc:  # it expires by itself
            log.warning("could not release the fetch lease %s: %s", self.key, exc)

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.release()


class FetchLeases:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def take(self, repository: str, digest: str) -> Lease | None:
        """This replica's lease on fetching the blob, or None while another replica holds one."""
        key = lease_key(repository, digest)
        token = secrets.token_hex(8)
        try:
            taken = await self.redis.set(key, token, nx=True, px=int(LEASE * 1000))
        except _FAILURES as exc:
            log.warning("fetch leases unavailable (%s): fetching %s@%s without one", exc, repository, digest)
            return Lease(None, key, token)
        return Lease(self, key, token) if taken else None

    async def held(self, repository: str, digest: str) -> bool:
        """Whether some replica holds the blob's lease (False when Redis cannot say)."""
        try:
            return bool(await self.redis.exists(lease_key(repository, digest)))
        except _FAILURES:
            return False

    async def claim(self, repository: str, digest: str, stored: Callable[[], Awaitable[bool]]) -> Lease | None:
        """A lease to fetch the blob here, or None once ``stored()`` says another replica stored
        it. Waits while another replica's lease lives; takes over when it goes."""
        while True:
            lease = await self.take(repository, digest)
            if lease is not None:
                return lease
            while await self.held(repository, digest):
                if await stored():
                    return None
                await asyncio.sleep(POLL)
            if await stored():  # stored just before the lease went
                return None
