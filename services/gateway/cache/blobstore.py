"""The blobstore client with the metadata cache in front: the same calls, so routes do not change.

Only the small hot reads are looked up (``stat_blob``, ``get_manifest``), and only the writes that
can make a cached answer wrong invalidate: a tag moved by ``put_manifest``, and the deletes. Uploads
and mounts only add links, and the cache holds no "not found", so they pass through, as does
everything else (``ForwardingBlobstore``'s calls, typed by the ``BlobstoreAPI`` protocol). Writes
invalidate whether or not the call succeeded: a call that failed or timed out may still have
happened. It may even happen later (the blobstore goes on with a call the gateway gave up on),
after a reader refilled the old answer: a failed write therefore invalidates once more when such a
call must have ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from services.common.rpc import blobstore_pb2 as pb
from services.gateway.blobstore_api import BlobstoreAPI, ForwardingBlobstore
from services.gateway.cache.store import MetadataCache

T = TypeVar("T")
# Seconds past the call timeout after which a blobstore call the gateway gave up on has ended.
_LATE_WRITE_MARGIN = 5.0


class CachedBlobstore(ForwardingBlobstore):
    # Calls that neither read what the cache holds nor remove anything it could hold (only
    # positive answers are cached, so adding a blob, a link or an upload clears nothing). They go
    # straight to the client (ForwardingBlobstore's); a test fails when a new client call is in
    # neither group.
    PASSTHROUGH = frozenset(
        {
            "read_blob",
            "mount_blob",
            "open_blob",
            "write_upload",
            "upload_status",
            "cancel_upload",
            "commit_upload",
            "list_tags",
            "list_repositories",
            "list_referrers",
            "close",
            # The mirror's pull records. Its purge (run by the blobstore) clears no cache entry: the
            # mirror trusts a cached manifest only while its own pull record keeps it alive
            # (proxy/__init__.py, ``_vouched``), and a purged blob's read fails and is fetched again.
            "touch_mirror",
            "mirror_tag_checked",
            "purge_mirror",
        }
    )

    def __init__(self, client: BlobstoreAPI, cache: MetadataCache) -> None:
        super().__init__(client)
        self.cache = cache
        self._late: set[asyncio.Task[None]] = set()

    async def _write(self, call: Awaitable[T], repository: str, what: str, *names: str) -> T:
        """Runs a write, then drops what it may have changed: each of ``names`` (tags or digests)."""
        try:
            return await call
        except BaseException:
            asyncio.get_running_loop().call_later(self.call_timeout + _LATE_WRITE_MARGIN, self._invalidate_late, repository, what, names)
            raise
        finally:
            await self._invalidate(repository, what, names)

    async def _invalidate(self, repository: str, what: str, names: tuple[str, ...]) -> None:
        await asyncio.gather(*(self.cache.invalidate(repository, what, name) for name in names))

    def _invalidate_late(self, repository: str, what: str, names: tuple[str, ...]) -> None:
        task = asyncio.ensure_future(self._invalidate(repository, what, names))
        self._late.add(task)
        task.add_done_callback(self._late.discard)

    async def stat_blob(self, repository: str, digest: str) -> pb.BlobInfo:
        cached, token = await self.cache.blob(repository, digest)
        if cached is not None:
            return cached
        info: pb.BlobInfo = await self.client.stat_blob(repository, digest)
        if token is not None:
            await self.cache.fill_blob(repository, info, token)
        return info

    async def get_manifest(self, repository: str, reference: str) -> pb.Manifest:
        cached, token = await self.cache.manifest(repository, reference)
        if cached is not None:
            return cached
        found: pb.Manifest = await self.client.get_manifest(repository, reference)
        if token is not None:
            await self.cache.fill_manifest(repository, reference, found, token)
        return found

    async def put_manifest(self, request: pb.PutManifestRequest) -> pb.ManifestInfo:
        if not request.tags:  # a new digest makes no cached answer wrong
            return await self.client.put_manifest(request)
        # Each tag may have pointed elsewhere.
        return await self._write(self.client.put_manifest(request), request.repository, "tag", *request.tags)

    async def delete_manifest(self, repository: str, digest: str, subject: str) -> None:
        await self._write(self.client.delete_manifest(repository, digest, subject), repository, "manifest", digest)

    async def delete_tag(self, repository: str, tag: str) -> None:
        await self._write(self.client.delete_tag(repository, tag), repository, "tag", tag)

    async def delete_blob(self, repository: str, digest: str) -> None:
        await self._write(self.client.delete_blob(repository, digest), repository, "blob", digest)
