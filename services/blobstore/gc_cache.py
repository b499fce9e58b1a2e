"""What a garbage collection removed, told to the gateways' metadata cache (``cache_lru``).

The cache holds only positive answers, and a blob HEAD or manifest GET is a hit only while the
repository's ``lnk`` key (blobs) or ``man`` set (manifests) is there (services/gateway/cache).
The collection drops exactly those, for each repository that linked a swept blob and each
untagged manifest it deleted, with the gateways' own INVALIDATE script, after the deletes of each
batch: the script replaces the repository's fill token, so a gateway that read the blobstore
before the delete cannot put the old answer back afterwards. Every gateway replica shares the
Redis, so one invalidation serves them all; gateways keep no other copy of these answers.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from redis.exceptions import RedisError

from services.common import metadata_cache as scripts
from services.common import redis_clients
from services.common.config import LRUCacheSettings
from services.common.metadata_cache import PREFIX

# (repository, "blob" or "manifest", digest)
Removal = tuple[str, str, str]


class CacheForgetter:
    """Callable for ``GarbageCollector(forget=...)``: raises when Redis could not be told."""

    def __init__(self, settings: LRUCacheSettings) -> None:
        self.settings = settings
        # A collection is no request: it may wait longer on Redis than a gateway would.
        self.redis = redis_clients.sync_client(settings.model_copy(update={"timeout": max(settings.timeout, 5.0)}))
        self._invalidate = self.redis.register_script(scripts.INVALIDATE)

    @classmethod
    def from_settings(cls, settings: LRUCacheSettings) -> CacheForgetter | None:
        return cls(settings) if settings.enabled else None

    def __call__(self, removals: Iterable[Removal]) -> None:
        try:
            pipe = self.redis.pipeline(transaction=False)
            for repository, what, digest in removals:
                args: list[str | int] = [PREFIX, repository, secrets.token_hex(8), self.settings.mutable_ttl, what, digest]
                self._invalidate(args=args, client=pipe)
            pipe.execute()
        except (RedisError, OSError) as exc:
            raise CacheUnreachable(f"cache_lru at {self.settings.host}:{self.settings.port}: {exc}") from exc

    def close(self) -> None:
        self.redis.close()


class CacheUnreachable(Exception):
    pass
