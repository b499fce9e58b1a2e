"""The pull-through cache (docs/mirror.md): repositories under an upstream's prefix are served from
the blobstore when it holds them and fetched from the upstream when it does not.

- Pulls by tag ask the upstream for the tag's digest (a HEAD) unless it was asked within the
  upstream's ``tag_ttl``; a moved tag is fetched (by digest, verified) and re-pointed.
- Pulls by digest never need the upstream once cached.
- When the upstream is down, slow, throttling or failing, a cached tag is served stale (warning,
  metric); without a cached copy the answer is 503 UNAVAILABLE, or 404 when the upstream says so.
- Fetched manifests are stored through the blobstore like pushes (sparse: their blobs may come
  later); fetched blobs are written into an upload committed against their digest (``blobfetch``).
- Every pull of mirrored content records when it happened in the blobstore (``TouchMirror``), at
  most once per item per ``touch_interval`` per gateway; the blobstore removes what was not pulled
  within the upstream's ``ttl``.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request

from services.common import digests
from services.common.config.schema import ProxySettings
from services.common.errors import BLOB_UNKNOWN, MANIFEST_UNKNOWN, NAME_UNKNOWN, UNAVAILABLE, UNSUPPORTED, RegistryError
from services.common.metrics import MIRROR_REQUESTS, MIRROR_STALE, MIRROR_UPSTREAM_ERRORS
from services.common.rpc import blobstore_pb2 as pb
from services.gateway import manifest_validation as mv
from services.gateway.proxy.blobfetch import BlobFetches
from services.gateway.proxy.upstream import NotFound, Upstream, UpstreamError

log = logging.getLogger("berth.gateway.proxy")

_UNKNOWN = (MANIFEST_UNKNOWN, NAME_UNKNOWN)
_TOUCHED_MAX = 100_000


def _unknown(exc: RegistryError) -> bool:
    return exc.code in _UNKNOWN


class Mirror:
    def __init__(self, settings: ProxySettings, blobstore: Any, manifest_limit: int) -> None:
        self.settings = settings
        self.blobstore = blobstore
        self.manifest_limit = manifest_limit
        self.upstreams = [Upstream(u, settings.timeout) for u in settings.all_upstreams()]
        self.fetches = BlobFetches(blobstore)
        self._touched: OrderedDict[tuple[str, str, str], float] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: Any, blobstore: Any) -> "Mirror | None":
        if not settings.proxy.enabled:
            return None
        return cls(settings.proxy, blobstore, settings.limits.manifest_size)

    async def aclose(self) -> None:
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
                UNSUPPORTED, {"repository": name, "upstream": up.url},
                message=f"{where} {up.url} (a pull-through cache): push to the upstream, or to a repository outside the mirrored prefixes",
            )

    # Pull records

    async def touch(self, up: Upstream, name: str, *, manifests: tuple[str, ...] = (), blobs: tuple[str, ...] = (),
                    checked_tag: str = "", force: bool = False) -> None:
        """Records a pull in the blobstore; repeated pulls of an item within the touch interval
        are recorded once (per gateway). Failures only log: the pull itself succeeded."""
        now = time.monotonic()
        interval = min(60.0, up.ttl / 10) if up.ttl > 0 else 60.0
        keys = [(name, "m", d) for d in manifests] + [(name, "b", d) for d in blobs]
        if not force and not checked_tag and all(now - self._touched.get(k, -1e9) < interval for k in keys):
            return
        try:
            await self.blobstore.touch_mirror(pb.MirrorTouchRequest(
                repository=name, manifests=manifests, blobs=blobs, checked_tag=checked_tag, ttl=up.ttl))
        except RegistryError as exc:
            log.warning("could not record a mirrored pull of %s: %s", name, exc)
            return
        for k in keys:
            self._touched[k] = now
            self._touched.move_to_end(k)
        while len(self._touched) > _TOUCHED_MAX:
            self._touched.popitem(last=False)

    def _failed(self, up: Upstream, exc: UpstreamError) -> None:
        MIRROR_UPSTREAM_ERRORS.labels(up.label, exc.reason).inc()

    def _unavailable(self, up: Upstream, exc: UpstreamError, what: str) -> RegistryError:
        status = 502 if exc.reason in ("invalid", "status", "denied") else 503
        return RegistryError(UNAVAILABLE, {"upstream": up.url, "reason": str(exc)}, status=status,
                             message=f"{what} is not cached and the upstream registry cannot provide it: {exc}")

    # Manifests

    async def get_manifest(self, up: Upstream, name: str, reference: str) -> pb.Manifest:
        if digests.is_digest(reference):
            return await self._by_digest(up, name, reference)
        return await self._by_tag(up, name, reference)

    async def _local(self, name: str, reference: str) -> pb.Manifest | None:
        try:
            return await self.blobstore.get_manifest(name, reference)
        except RegistryError as exc:
            if _unknown(exc):
                return None
            raise

    async def _by_digest(self, up: Upstream, name: str, digest: str) -> pb.Manifest:
        found = await self._local(name, digest)
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
        await self._store(up, name, digest, payload, content_type, tags=[])
        return pb.Manifest(digest=digest, payload=payload)

    async def _by_tag(self, up: Upstream, name: str, tag: str) -> pb.Manifest:
        local = await self._local(name, tag)
        if local is not None and up.tag_ttl > 0:
            checked = (await self.blobstore.mirror_tag_checked(name, tag)).checked_at
            if time.time() - checked < up.tag_ttl:
                MIRROR_REQUESTS.labels(up.label, "manifest", "hit").inc()
                await self.touch(up, name, manifests=(local.digest,))
                return local
        try:
            digest = await up.head_manifest(name, tag)
            if local is not None and digest == local.digest:
                MIRROR_REQUESTS.labels(up.label, "manifest", "hit").inc()
                await self.touch(up, name, manifests=(digest,), checked_tag=tag)
                return local
            stored = await self._local(name, digest) if digest else None
            if stored is not None:
                payload, content_type = stored.payload, ""
            else:
                payload, content_type = await up.get_manifest(name, digest or tag, self.manifest_limit)
        except NotFound:
            # The upstream no longer has the tag: neither does its mirror.
            raise RegistryError(MANIFEST_UNKNOWN, {"reference": tag, "upstream": up.url}) from None
        except UpstreamError as exc:
            self._failed(up, exc)
            if local is None:
                raise self._unavailable(up, exc, f"{name}:{tag}") from None
            MIRROR_STALE.labels(up.label).inc()
            MIRROR_REQUESTS.labels(up.label, "manifest", "stale").inc()
            log.warning("serving %s:%s (%s) from the cache: the upstream failed: %s", name, tag, local.digest, exc)
            await self.touch(up, name, manifests=(local.digest,))
            return local
        computed = digests.of(payload, digests.parse(digest).algorithm if digest else digests.CANONICAL)
        if digest and computed != digest:
            bad = UpstreamError("invalid", f"{up.url} sent a manifest for {tag} that does not hash to {digest}")
            self._failed(up, bad)
            raise self._unavailable(up, bad, f"{name}:{tag}")
        MIRROR_REQUESTS.labels(up.label, "manifest", "miss").inc()
        await self._store(up, name, computed, payload, content_type, tags=[tag])
        return pb.Manifest(digest=computed, payload=payload)

    async def _store(self, up: Upstream, name: str, digest: str, payload: bytes, content_type: str, tags: list[str]) -> None:
        """Stores a fetched manifest like a push, sparse (its blobs and children come when pulled)."""
        try:
            parsed = mv.parse(payload, content_type or None)
        except RegistryError as exc:
            log.warning("not caching %s@%s from %s: %s", name, digest, up.url, exc)
            return
        descriptor = parsed.referrer_descriptor(digest, len(payload)) if parsed.subject else None
        await self.blobstore.put_manifest(pb.PutManifestRequest(
            repository=name, digest=digest, payload=payload, tags=tags, subject=parsed.subject,
            referrer_descriptor=json.dumps(descriptor).encode() if descriptor else b"",
        ))
        await self.touch(up, name, manifests=(digest,), checked_tag=tags[0] if tags else "", force=True)

    # Blobs

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
        stored, and reads it from the blobstore."""
        running = self.fetches.running(name, digest)
        if running is not None:
            MIRROR_REQUESTS.labels(up.label, "blob", "hit").inc()
            try:
                await _shielded(running.done)
            except NotFound:
                raise RegistryError(BLOB_UNKNOWN, {"digest": digest, "upstream": up.url}) from None
            except (UpstreamError, RegistryError) as exc:
                raise self._unavailable(up, _as_upstream(exc), f"{name}@{digest}") from None
            return None
        MIRROR_REQUESTS.labels(up.label, "blob", "miss").inc()

        async def stored(size: int) -> None:
            await self.touch(up, name, blobs=(digest,), force=True)

        fetch = self.fetches.start(up, name, digest, stored)
        try:
            size = await _shielded(fetch.size)
        except NotFound:
            raise RegistryError(BLOB_UNKNOWN, {"digest": digest, "upstream": up.url}) from None
        except UpstreamError as exc:
            self._failed(up, exc)
            raise self._unavailable(up, exc, f"{name}@{digest}") from None
        if not follow:
            fetch.stop_listening()
            try:
                await _shielded(fetch.done)
            except (UpstreamError, RegistryError) as exc:
                raise self._unavailable(up, _as_upstream(exc), f"{name}@{digest}") from None
            return None
        return size, fetch.follow()


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
