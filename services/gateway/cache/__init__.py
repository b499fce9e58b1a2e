"""The gateways' shared metadata cache (``cache_lru``): small, hot blobstore answers kept in Redis.

What is kept, per key (all under ``berth:c1:``; every key has a TTL):

| key | value | TTL |
|---|---|---|
| ``pay:<digest>`` | a manifest's bytes (up to ``max_item_size``) | ``ttl`` (content-addressed) |
| ``size:<digest>`` | a blob's size | ``ttl`` (content-addressed) |
| ``tag:<repo>:<tag>`` | the digest the tag points at | ``mutable_ttl`` |
| ``man:<repo>:<digest>`` | set: ``@`` (the repository has the manifest) and tags seen pointing at it | ``mutable_ttl`` |
| ``lnk:<repo>:<digest>`` | the repository may read the blob | ``mutable_ttl`` |
| ``tok:<repo>`` | the repository's fill token (see below) | ``mutable_ttl`` |

A manifest read by tag is a hit only when the tag's digest, that digest's ``man`` set holding the tag,
and the payload are all there; a blob HEAD needs ``lnk`` and ``size``. Anything less goes to the
blobstore, whose answer fills the cache. Errors and absences are never cached, so pushes and mounts
(which only add) have nothing to invalidate; tag moves, deletes of tags, manifests and blobs drop
their keys. Deleting a manifest drops its ``man`` set, which is what makes every tag that pointed at
it (the blobstore deletes those tags too) a miss. A garbage collection drops the ``lnk`` keys of the
blobs and the ``man`` sets of the manifests it removed, with the same invalidation
(services/blobstore/gc_cache.py).

Fills cannot undo a concurrent invalidation: a lookup that misses returns the repository's fill
token, the fill after the blobstore call only writes the mutable keys if the token is unchanged, and
every invalidation replaces the token. A fill whose blobstore answer predates a write therefore
either lands before the invalidation (which deletes it) or is refused. An evicted or expired token
also refuses fills, so LRU eviction never makes a stale fill possible.

Operators: give Redis a ``maxmemory`` and ``maxmemory-policy allkeys-lru`` (the classic registry's
cache_lru), so it evicts rather than refusing writes; a single Redis (or a Sentinel-managed
primary), not Redis Cluster, since the scripts name keys they compute. The cache's keys may share a
database with other data: nothing here flushes a database.

When Redis is down or slow (each call waits at most ``timeout``), the gateway serves from the
blobstore alone, logs one warning per outage, sets ``berth_cache_up`` to 0 and probes in the
background. Invalidations it could not send are kept and re-sent before it reads from Redis again,
so a delete made during the outage is not undone by entries from before it. The remaining bound: a
gateway that cannot reach Redis while others can (or that stops before it could re-send) leaves
their reads stale for at most ``mutable_ttl`` seconds after the write; so does a Redis failover that
loses acknowledged writes (asynchronous replication) and with them an invalidation.

Metrics: ``berth_cache_requests_total{kind, result}`` per lookup (kind ``tag``: a manifest by tag,
``manifest``: by digest, ``blob``: a blob's size; result ``error`` also while Redis is down) and
``berth_cache_up``.
"""

from services.gateway.cache.blobstore import CachedBlobstore
from services.gateway.cache.store import MetadataCache

__all__ = ["CachedBlobstore", "MetadataCache"]
