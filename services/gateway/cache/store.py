"""The Redis calls of the metadata cache: lookups, fills and invalidations, each one script call
that waits at most ``cache_lru.timeout`` and never raises (a failure only switches the cache off
until Redis is back, see outage.py)."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from services.common import digests, redis_clients
from services.common import metadata_cache as scripts
from services.common.config import LRUCacheSettings
from services.common.metadata_cache import PREFIX
from services.common.metrics import CACHE_REQUESTS
from services.common.rpc import blobstore_pb2 as pb
from services.gateway.cache.outage import Invalidation, Outage

_FAILURES = (RedisError, OSError, asyncio.TimeoutError)


class MetadataCache:
    def __init__(self, settings: LRUCacheSettings, client: aioredis.Redis | None = None) -> None:
        self.settings = settings
        self.redis = client or redis_clients.async_client(settings)
        self.outage = Outage(self._repair, f"{settings.host}:{settings.port}")
        self._lookup_manifest = self.redis.register_script(scripts.LOOKUP_MANIFEST)
        self._lookup_blob = self.redis.register_script(scripts.LOOKUP_BLOB)
        self._fill_manifest = self.redis.register_script(scripts.FILL_MANIFEST)
        self._fill_blob = self.redis.register_script(scripts.FILL_BLOB)
        self._invalidate = self.redis.register_script(scripts.INVALIDATE)

    @classmethod
    def from_settings(cls, settings: LRUCacheSettings) -> MetadataCache | None:
        """The cache, or None when ``cache_lru.host`` is empty. Connects at the first call."""
        return cls(settings) if settings.enabled else None

    async def aclose(self) -> None:
        await self.outage.aclose()
        await self.redis.aclose()

    # Lookups: a hit, or a miss with the token a later fill must present (None: do not fill).

    async def manifest(self, repository: str, reference: str) -> tuple[pb.Manifest | None, str | None]:
        by_digest = digests.is_digest(reference)
        kind = "manifest" if by_digest else "tag"
        tag, digest = ("", reference) if by_digest else (reference, "")
        reply = await self._lookup(kind, self._lookup_manifest, repository, tag, digest)
        if reply is None:
            return None, None
        if reply[0] == 1:
            return pb.Manifest(digest=reply[1].decode(), payload=reply[2]), None
        return None, reply[1].decode()

    async def blob(self, repository: str, digest: str) -> tuple[pb.BlobInfo | None, str | None]:
        reply = await self._lookup("blob", self._lookup_blob, repository, digest)
        if reply is None:
            return None, None
        if reply[0] == 1:
            return pb.BlobInfo(digest=digest, size=int(reply[1])), None
        return None, reply[1].decode()

    # Fills, after a miss and the blobstore's answer.

    async def fill_manifest(self, repository: str, reference: str, found: pb.Manifest, token: str) -> None:
        if len(found.payload) > self.settings.max_item_size:
            return
        tag = "" if digests.is_digest(reference) else reference
        await self._write(self._fill_manifest, repository, token, tag, found.digest, found.payload, self.settings.ttl)

    async def fill_blob(self, repository: str, info: pb.BlobInfo, token: str) -> None:
        await self._write(self._fill_blob, repository, token, info.digest, info.size, self.settings.ttl)

    # Invalidations, after a write (whatever its outcome: a failed call may still have happened).

    async def invalidate(self, repository: str, what: str, name: str) -> None:
        """Drops what a write changed. Shielded: a client that goes away cannot cancel it halfway."""
        await asyncio.shield(self._send_invalidation(Invalidation(repository, what, name)))

    async def _send_invalidation(self, item: Invalidation) -> None:
        if not self.outage.usable:
            self.outage.skipped(item)
            return
        try:
            await self._invalidate(args=self._args(item.repository, secrets.token_hex(8), item.what, item.name))
        except _FAILURES as exc:
            self.outage.failed(exc, missed=item)
            return
        self.outage.succeeded()

    # Plumbing

    def _args(self, repository: str, token: str, *rest: Any) -> list[Any]:
        return [PREFIX, repository, token, self.settings.mutable_ttl, *rest]

    async def _lookup(self, kind: str, script: AsyncScript, repository: str, *rest: Any) -> list[Any] | None:
        if not self.outage.usable:
            CACHE_REQUESTS.labels(kind, "error").inc()
            return None
        try:
            reply = await script(args=self._args(repository, secrets.token_hex(8), *rest))
        except _FAILURES as exc:
            self.outage.failed(exc)
            CACHE_REQUESTS.labels(kind, "error").inc()
            return None
        self.outage.succeeded()
        CACHE_REQUESTS.labels(kind, "hit" if reply[0] == 1 else "miss").inc()
        return reply

    async def _write(self, script: AsyncScript, repository: str, token: str, *rest: Any) -> None:
        if not self.outage.usable:
            return
        try:
            await script(args=self._args(repository, token, *rest))
        except _FAILURES as exc:
            self.outage.failed(exc)
            return
        self.outage.succeeded()

    async def _repair(self, missed: list[Invalidation], drop_all: bool) -> None:
        """Run by the outage's probe: raises while Redis still fails."""
        await self.redis.ping()
        if drop_all:
            async for keys in _batches(self.redis.scan_iter(match=PREFIX + "*", count=1000), 500):
                await self.redis.unlink(*keys)
        for item in missed:
            await self._invalidate(args=self._args(item.repository, secrets.token_hex(8), item.what, item.name))


async def _batches(keys: Any, size: int) -> Any:
    batch: list[bytes] = []
    async for key in keys:
        batch.append(key)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
