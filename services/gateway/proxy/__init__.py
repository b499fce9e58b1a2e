"""The pull-through cache (docs/mirror.md): repositories under an upstream's prefix are served from
the blobstore when it holds them and fetched from the upstream when it does not.

- Pulls by tag ask the upstream for the tag's digest (a HEAD) unless it was asked within the
  upstream's ``tag_ttl``; a moved tag is fetched (by digest, verified) and re-pointed.
- Pulls by digest never need the upstream once cached.
- When the upstream is down, slow, throttling or failing, a cached tag is served stale (warning,
  metric); without a cached copy the answer is 503 UNAVAILABLE, or 404 when the upstream says so.
  A cached tag the upstream answers 404 for is served stale too (registry:2 does), but that pull
  is not recorded, so the tag expires ``ttl`` after the last pull the upstream still confirmed.
- With ``tag_ttl`` 0 the upstream's HEAD runs while the store is read.
- The metadata cache (cache_lru) is not told about the blobstore's purges: a manifest it answers
  is trusted only when this gateway's own pull record keeps it from expiring (``_vouched``).
- Fetched manifests are stored through the blobstore like pushes (sparse: their blobs may come
  later); fetched blobs are written into an upload committed against their digest (``blobfetch``).
  An image manifest fetched from the upstream starts the fetch of its small blobs at once
  (``_prefetch``): its client asks for them next, and finds them under way or stored.
- Every pull of mirrored content records when it happened in the blobstore (``TouchMirror``), at
  most once per item per ``touch_interval`` per gateway; the blobstore removes what was not pulled
  within the upstream's ``ttl``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from cachetools import LRUCache
from starlette.requests import Request

from services.common import digests
from services.common.config.schema import ProxySettings
from services.common.errors import (
    BLOB_UNKNOWN,
    MANIFEST_UNKNOWN,
    NAME_UNKNOWN,
    UNAVAILABLE,
    UNSUPPORTED,
    RegistryError,
)
from services.common.metrics import (
    MIRROR_REQUESTS,
    MIRROR_STALE,
    MIRROR_UPSTREAM_ERRORS,
)
from services.common.rpc import blobstore_pb2 as pb
from services.gateway import manifest_validation as mv
from services.gateway.blobstore_api import BlobstoreAPI
from services.gateway.cache import CachedBlobstore
from services.gateway.proxy.blobfetch import BlobFetches, Fetch
from services.gateway.proxy.fetch_leases import FetchLeases
from services.gateway.proxy.upstream import NotFound, Upstream, UpstreamError

log = logging.getLogger("berth.gateway.proxy")

_UNKNOWN = (MANIFEST_UNKNOWN, NAME_UNKNOWN)
# Pull records this gateway remembers writing, (repository, "m" or "b", digest) -> monotonic time;
# each entry carries its own time, so keeping one longer never makes it vouch for more.
_TOUCHED_MAX = 100_000
# Small blobs of one fetched image manifest fetched ahead of its client's requests.
PREFETCH_MAX = 16
# No prefetch starts while this many fetches run in the gateway: each holds up to one message.
PREFETCH_BUSY = 32


def _unknown(exc: RegistryError) -> bool:
    return exc.code in _UNKNOWN


class Mirror:
    def __init__(
        self, settings: ProxySettings, blobstore: BlobstoreAPI, manifest_limit: int, whole_limit: int, leases: FetchLeases | None = None
    ) -> None:
        self.settings = settings
        # One download per blob across replicas (with Redis); None: per gateway only.
        self.leases = leases
        self.blobstore = blobstore
        self.manifest_limit = manifest_limit
        self.upstreams = [Upstream(u, settings.timeout) for u in settings.all_upstreams()]
        # Blobs up to whole_limit (one blobstore message) are fetched whole, and prefetched.
        self.fetches = BlobFetches(blobstore, whole_limit)
        # The store without the metadata cache in front, for answers the cache cannot vouch for.
        self._store = blobstore.client if isinstance(blobstore, CachedBlobstore) else blobstore
        # Only the event loop's thread touches it: no lock.
        self._touched: LRUCache[tuple[str, str, str], float] = LRUCache(maxsize=_TOUCHED_MAX)
        self._tasks: set[asyncio.Task[None]] = set()
        # Fetched manifests being stored, (repository, digest) -> manifest: answered from here.
        self._storing: dict[tuple[str, str], pb.Manifest] = {}

    @classmethod
    def from_settings(cls, settings: Any, blobstore: Any) -> Mirror | None:
        if not settings.proxy.enabled:
            return None
        leases = FetchLeases(blobstore.cache.redis) if isinstance(blobstore, CachedBlobstore) else None
        return cls(settings.proxy, blobstore, settings.limits.manifest_size, settings.blobstore.chunk_size, leases)

    async def aclose(self) -> None:
        if self._tasks:  # manifests and pull records still being written
            await asyncio.wait(set(self._tasks), timeout=5)
        for up in self.upstreams:
            await up.aclose()

    def upstream_for(self, name: str) -> Upstream | None:
        for up in self.upstreams:  # longest prefix first
            if up.covers(name):
                return up
        return None

    def refuse_write(self, name: str) -> None:
        up = self.upstream_for(name)
        if up is not None:
            where = f"the repositories under {up.prefix!r} mirror" if up.prefix else "this registry mirrors"
            raise RegistryError(
                UNSUPPORTED,
                {"repository": name, "upstream": up.url},
                message=f"{where} {up.url} (a pull-through cache): push to the upstream, or to a repository outside the mirrored prefixes",
            )

    # Pull records

    async def touch(
        self,
        up: Upstream,
        name: str,
        *,
        manifests: tuple[str, ...] = (),
        blobs: tuple[str, ...] = (),
        checked_tag: str = "",
        force: bool = False,
    ) -> None:
        """Records a pull in the blobstore; repeated pulls of an item within the touch interval
        are recorded once (per gateway). Failures only log: the pull itself succeeded."""
        now = time.monotonic()
        interval = min(60.0, up.ttl / 10) if up.ttl > 0 else 60.0
        keys = [(name, "m", d) for d in manifests] + [(name, "b", d) for d in blobs]
        if not force and not checked_tag and all(now - self._touched.get(k, -1e9) < interval for k in keys):
            return
        try:
            await self.blobstore.touch_mirror(
                pb.MirrorTouchRequest(repository=name, manifests=manifests, blobs=blobs, checked_tag=checked_tag, ttl=up.ttl)
            )
        except RegistryError as exc:
            log.warning("could not record a mirrored pull of %s: %s", name, exc)
            return
        for k in keys:
            self._touched[k] = now

    def _failed(self, up: Upstream, exc: UpstreamError) -> None:
        MIRROR_UPSTREAM_ERRORS.labels(up.label, exc.reason).inc()

    def _unavailable(self, up: Upstream, exc: UpstreamError, what: str) -> RegistryError:
        status = 502 if exc.reason in ("invalid", "status", "denied") else 503
        return RegistryError(
            UNAVAILABLE,
            {"upstream": up.url, "reason": str(exc)},
            status=status,
            message=f"{what} is not cached and the upstream registry cannot provide it: {exc}",
        )

    # Manifests

    async def get_manifest(self, up: Upstream, name: str, reference: str) -> pb.Manifest:
        if digests.is_digest(reference):
            return await self._by_digest(up, name, reference)
        return await self._by_tag(up, name, reference)

    async def _local(self, up: Upstream, name: str, reference: str) -> pb.Manifest | None:
        """What the store holds. An answer of the metadata cache (cache_lru) is trusted only for a
        manifest this gateway recorded a pull of recently enough that the purge cannot have removed
        it (the purge runs in the blobstore and tells no cache); otherwise the store is asked."""
        pending = self._storing.get((name, reference))
        if pending is not None:
            return pending
        try:
            found: pb.Manifest = await self.blobstore.get_manifest(name, reference)
            if self._store is not self.blobstore and not self._vouched(up, name, found.digest):
                found = await self._store.get_manifest(name, reference)
            return found
        except RegistryError as exc:
            if _unknown(exc):
                return None
            raise

    def _vouched(self, up: Upstream, name: str, digest: str) -> bool:
        """True when this gateway's own pull record of the manifest keeps it from expiring now:
        the record says pulled no earlier than when it was written, and the purge removes only
        what was not pulled within ``ttl``. A margin covers clocks and a purge already running."""
        touched = self._touched.get((name, "m", digest))
        if touched is None:
            return False
        if up.ttl <= 0:
            return True
        return time.monotonic() - touched < up.ttl - min(60.0, up.ttl / 10)

    async def _by_digest(self, up: Upstream, name: str, digest: str) -> pb.Manifest:
        found = await self._local(up, name, digest)
        if found is not None:
            MIRROR_REQUESTS.labels(up.label, "manifest", "hit").inc()
            await self.touch(up, name, manifests=(digest,))
            return found
        MIRROR_REQUESTS.labels(up.label, "manifest", "miss").inc()
        try:
            payload, content_type = await up.get_manifest(name, digest, self.manifest_limit)
        except NotFound:
            raise RegistryError(MANIFEST_UNKNOWN, {"reference": digest, "upstream": up.url}) from None
        except UpstreamError as exc:
            self._failed(up, exc)
            raise self._unavailable(up, exc, f"{name}@{digest}") from None
        if digests.of(payload, digests.parse(digest).algorithm) != digest:
            bad = UpstreamError("invalid", f"{up.url} sent a manifest that does not hash to {digest}")
            self._failed(up, bad)
            raise self._unavailable(up, bad, f"{name}@{digest}")
        self._store_fetched(up, name, digest, payload, content_type, tags=[])
        return pb.Manifest(digest=digest, payload=payload)

    async def _head(self, up: Upstream, name: str, tag: str) -> str | NotFound | UpstreamError:
        try:
            return await up.head_manifest(name, tag)
        except (NotFound, UpstreamError) as exc:
            return exc

    async def _by_tag(self, up: Upstream, name: str, tag: str) -> pb.Manifest:
        if up.tag_ttl > 0:
            local = await self._local(up, name, tag)
            if local is not None:
                checked = (await self.blobstore.mirror_tag_checked(name, tag)).checked_at
                if time.time() - checked < up.tag_ttl:
                    MIRROR_REQUESTS.labels(up.label, "manifest", "hit").inc()
                    await self.touch(up, name, manifests=(local.digest,))
                    return local
            head = await self._head(up, name, tag)
        else:  # the upstream is asked every time: ask it while the store is read
            asking = asyncio.ensure_future(self._head(up, name, tag))
            try:
                local = await self._local(up, name, tag)
            except BaseException:
                asking.cancel()
                raise
            head = await asking
        checked_tag = tag if up.tag_ttl > 0 else ""  # the tag's record is read only with a tag_ttl
        try:
            if isinstance(head, Exception):
                raise head
            digest = head
            if local is not None and digest == local.digest:
                MIRROR_REQUESTS.labels(up.label, "manifest", "hit").inc()
                await self.touch(up, name, manifests=(digest,), checked_tag=checked_tag)
                return local
            stored = await self._local(up, name, digest) if digest else None
            if stored is not None:
                payload, content_type = stored.payload, ""
            else:
                payload, content_type = await up.get_manifest(name, digest or tag, self.manifest_limit)
        except NotFound:
            if local is None:
                raise RegistryError(MANIFEST_UNKNOWN, {"reference": tag, "upstream": up.url}) from None
            # The upstream no longer has the tag. registry:2 serves its copy whenever the upstream
            # fails, a 404 included; so does Berth, but without recording a pull: the tag then
            # goes at its ttl, counted from the last pull the upstream still confirmed.
            return self._stale(up, name, tag, local, "the upstream no longer has the tag (404)")
        except UpstreamError as exc:
            self._failed(up, exc)
            if local is None:
                raise self._unavailable(up, exc, f"{name}:{tag}") from None
            await self.touch(up, name, manifests=(local.digest,))
            return self._stale(up, name, tag, local, f"the upstream failed: {exc}")
        computed = digests.of(payload, digests.parse(digest).algorithm if digest else digests.CANONICAL)
        if digest and computed != digest:
            bad = UpstreamError("invalid", f"{up.url} sent a manifest for {tag} that does not hash to {digest}")
            self._failed(up, bad)
            raise self._unavailable(up, bad, f"{name}:{tag}")
        MIRROR_REQUESTS.labels(up.label, "manifest", "miss").inc()
        self._store_fetched(up, name, computed, payload, content_type, tags=[tag])
        return pb.Manifest(digest=computed, payload=payload)

    def _stale(self, up: Upstream, name: str, tag: str, local: pb.Manifest, why: str) -> pb.Manifest:
        MIRROR_STALE.labels(up.label).inc()
        MIRROR_REQUESTS.labels(up.label, "manifest", "stale").inc()
        log.warning("serving %s:%s (%s) from the cache: %s", name, tag, local.digest, why)
        return local

    def _store_fetched(self, up: Upstream, name: str, digest: str, payload: bytes, content_type: str, tags: list[str]) -> None:
        """Stores a fetched (and verified) manifest like a push, sparse (its blobs and children
        come when pulled), after its client is answered: the store's writes and fsyncs cost more
        than the fetch. Until then this gateway answers from memory for it; a store that fails
        only logs, and the next pull fetches again."""
        try:
            parsed = mv.parse(payload, content_type or None)
        except RegistryError as exc:
            log.warning("not caching %s@%s from %s: %s", name, digest, up.url, exc)
            return
        descriptor = parsed.referrer_descriptor(digest, len(payload)) if parsed.subject else None
        request = pb.PutManifestRequest(
            repository=name,
            digest=digest,
            payload=payload,
            tags=tags,
            subject=parsed.subject,
            referrer_descriptor=json.dumps(descriptor).encode() if descriptor else b"",
        )
        key = (name, digest)
        self._storing[key] = pb.Manifest(digest=digest, payload=payload)

        async def store() -> None:
            try:
                await self.blobstore.put_manifest(request)
            except RegistryError as exc:
                log.warning("could not cache %s@%s from %s: %s", name, digest, up.url, exc)
                return
            finally:
                self._storing.pop(key, None)
            await self.touch(up, name, manifests=(digest,), checked_tag=tags[0] if tags and up.tag_ttl > 0 else "", force=True)

        self._background(store())
        small = [d for d, size in parsed.blob_sizes.items() if self.fetches.reads_whole(size)][:PREFETCH_MAX]
        if small:
            self._background(self._prefetch(up, name, small))

    async def _prefetch(self, up: Upstream, name: str, wanted: list[str]) -> None:
        """Starts fetching the small blobs of an image just fetched (config, small layers) while
        its client reads the manifest: the client asks for them next, and then joins a fetch
        under way or finds them stored. Large layers wait for a client to stream them."""
        wanted = [d for d in wanted if self.fetches.running(name, d) is None]
        held = await asyncio.gather(*(self.blobstore.stat_blob(name, d) for d in wanted), return_exceptions=True)
        for digest, answer in zip(wanted, held, strict=True):
            if not isinstance(answer, RegistryError) or answer.code not in (BLOB_UNKNOWN, NAME_UNKNOWN):
                continue  # held already (or the store is failing: the client's own request will say so)
            if self.fetches.running(name, digest) is not None:  # a client started it meanwhile
                continue
            if len(self.fetches.inflight) >= PREFETCH_BUSY:
                return  # busy enough: the rest waits for its clients (and memory stays bounded)
            lease = None
            if self.leases is not None:
                lease = await self.leases.take(name, digest)
                if lease is None or self.fetches.running(name, digest) is not None:
                    if lease is not None:
                        await lease.release()
                    continue  # another replica fetches it (or a client here started meanwhile)
            self.fetches.start(up, name, digest, self._stored_blob(up, name, digest), listening=False, lease=lease)

    def _background(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # Blobs

    def _stored_blob(self, up: Upstream, name: str, digest: str) -> Callable[[int], Awaitable[None]]:
        """What a fetch does once its blob is stored: records the pull."""

        async def stored(size: int) -> None:
            await self.touch(up, name, blobs=(digest,), force=True)

        return stored

    async def blob_size(self, up: Upstream, name: str, digest: str) -> int:
        """For a HEAD of a blob the cache lacks: the upstream's answer, nothing stored."""
        try:
            return await up.head_blob(name, digest)
        except NotFound:
            raise RegistryError(BLOB_UNKNOWN, {"digest": digest, "upstream": up.url}) from None
        except UpstreamError as exc:
            self._failed(up, exc)
            raise self._unavailable(up, exc, f"{name}@{digest}") from None

    async def fetch_blob(self, up: Upstream, name: str, digest: str, *, follow: bool = True) -> tuple[int, AsyncIterator[bytes]] | None:
        """Starts or joins the fetch of a blob the cache lacks. The client that started it gets
        (size, the bytes as they arrive; size -1 when the upstream did not say); a client that
        joined, or one that does not ``follow`` (a ranged read), gets None once the blob is
        stored, and reads it from the blobstore. With fetch leases, a blob another replica is
        fetching is waited for, and read from the store too."""
        running = self.fetches.running(name, digest)
        if running is not None:
            return await self._join(up, running, name, digest, follow)
        lease = None
        if self.leases is not None:
            lease = await self.leases.claim(name, digest, lambda: self._held(name, digest))
            if lease is None:  # stored by another replica
                MIRROR_REQUESTS.labels(up.label, "blob", "hit").inc()
                return None
            running = self.fetches.running(name, digest)  # started here while the lease was taken
            if running is not None:
                await lease.release()
                return await self._join(up, running, name, digest, follow)
        MIRROR_REQUESTS.labels(up.label, "blob", "miss").inc()
        fetch = self.fetches.start(up, name, digest, self._stored_blob(up, name, digest), lease=lease)
        try:
            size = await _shielded(fetch.size)
        except NotFound:
            raise RegistryError(BLOB_UNKNOWN, {"digest": digest, "upstream": up.url}) from None
        except UpstreamError as exc:
            self._failed(up, exc)
            raise self._unavailable(up, exc, f"{name}@{digest}") from None
        if not follow or self.fetches.reads_whole(size):
            fetch.stop_listening()
            return await self._outcome(up, fetch, name, digest, follow)
        return size, fetch.follow()

    async def _join(self, up: Upstream, running: Fetch, name: str, digest: str, follow: bool) -> tuple[int, AsyncIterator[bytes]] | None:
        """A client of a fetch this gateway runs already."""
        MIRROR_REQUESTS.labels(up.label, "blob", "hit").inc()
        return await self._outcome(up, running, name, digest, follow)

    async def _outcome(self, up: Upstream, fetch: Fetch, name: str, digest: str, follow: bool) -> tuple[int, AsyncIterator[bytes]] | None:
        """What a client that does not stream the fetch gets: the bytes of a blob read whole (and
        checked), else None once the blob is stored (read it from the store)."""
        try:
            await _shielded(fetch.done)
            if follow and fetch.body is not None:
                return len(fetch.body), _once(fetch.body)
            await _shielded(fetch.stored)
        except NotFound:
            raise RegistryError(BLOB_UNKNOWN, {"digest": digest, "upstream": up.url}) from None
        except (UpstreamError, RegistryError) as exc:
            raise self._unavailable(up, _as_upstream(exc), f"{name}@{digest}") from None
        return None

    async def _held(self, name: str, digest: str) -> bool:
        """Whether the store holds the blob for the repository (asked of the store itself)."""
        try:
            await self._store.stat_blob(name, digest)
        except RegistryError:
            return False
        return True


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def refuse_mirrored_writes(request: Request) -> None:
    """The router-level dependency (when something is mirrored): a write to a repository under a
    mirrored prefix is 405 UNSUPPORTED; everything else goes on."""
    if request.method in ("GET", "HEAD"):
        return
    name = request.path_params.get("name")
    mirror = request.app.state.gateway.mirror
    if name and mirror is not None:
        mirror.refuse_write(name)


def _as_upstream(exc: Exception) -> UpstreamError:
    """What the joiners of a failed fetch are told: a blob that did not verify (DIGEST_INVALID,
    SIZE_INVALID from the commit) is the upstream's fault, a 502."""
    return exc if isinstance(exc, UpstreamError) else UpstreamError("invalid", f"the upstream's blob was refused: {exc}")


async def _shielded(future: Any) -> Any:
    """Waits without cancelling the shared future when this client goes away."""
    return await asyncio.shield(future)
