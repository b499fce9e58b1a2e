"""The blobstore client API the gateway's routes call: one typed seam.

``BlobstoreAPI`` is what ``GatewayState.blobstore`` holds. The gRPC client
(``blobstore_client.BlobstoreClient``) and the metadata cache in front of it
(``cache.blobstore.CachedBlobstore``) both subclass it explicitly, so a call missing from either is
a mypy error (an abstract method left unimplemented), not an AttributeError at request time.
``ForwardingBlobstore`` passes every call to another client: a wrapper subclasses it and overrides
only the calls it changes.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from services.common.rpc import blobstore_pb2 as pb


@dataclass(frozen=True)
class BlobStream:
    """An open read: the blob's total size, and its bytes from the requested offset."""

    size: int
    chunks: AsyncIterator[bytes]


class BlobstoreAPI(Protocol):
    """Every call raises RegistryError exactly as the blobstore raised it."""

    @property
    def call_timeout(self) -> float:
        """Seconds a short call may take (a write that failed may still land up to this much later)."""

    @property
    def channel(self) -> Any:
        """The gRPC channel (grpc.aio.Channel), for the readiness probe's health check."""

    @abstractmethod
    async def close(self) -> None: ...

    # Blobs

    @abstractmethod
    async def stat_blob(self, repository: str, digest: str) -> pb.BlobInfo: ...

    @abstractmethod
    async def read_blob(self, repository: str, digest: str, offset: int = 0, length: int = 0) -> BlobStream:
        """Opens a read; raises before returning if the blob cannot be read."""

    @abstractmethod
    async def delete_blob(self, repository: str, digest: str) -> None: ...

    @abstractmethod
    async def mount_blob(self, repository: str, digest: str, from_repository: str) -> pb.BlobInfo: ...

    @abstractmethod
    async def open_blob(self, repository: str, digest: str, method: str, inline_limit: int) -> pb.OpenBlobResponse:
        """How to serve a blob: a URL for ``method`` the client can fetch it from (none asked for
        when ``method`` is empty), else its bytes when at most ``inline_limit``, else its size."""

    # Uploads

    @abstractmethod
    async def write_upload(
        self,
        repository: str,
        upload_id: str,
        offset: int,
        data: AsyncIterator[bytes] | bytes,
        *,
        commit_digest: str = "",
        expected_length: int = -1,
        digest_algorithm: str = "",
        fresh_since: int = 0,
    ) -> pb.UploadInfo:
        """Writes ``data`` into an upload (a whole blob, committed at once, when ``upload_id`` is
        empty): bytes (a body that fits in one message) in one short call, an iterator as a
        stream. ``fresh_since``: the session may not be in storage yet (UploadRef in the proto)."""

    @abstractmethod
    async def upload_status(self, repository: str, upload_id: str, fresh_since: int = 0) -> pb.UploadInfo: ...

    @abstractmethod
    async def cancel_upload(self, repository: str, upload_id: str, fresh_since: int = 0) -> None: ...

    @abstractmethod
    async def commit_upload(self, repository: str, upload_id: str, digest: str, fresh_since: int = 0) -> pb.BlobInfo: ...

    # Manifests and tags

    @abstractmethod
    async def put_manifest(self, request: pb.PutManifestRequest) -> pb.ManifestInfo: ...

    @abstractmethod
    async def get_manifest(self, repository: str, reference: str) -> pb.Manifest: ...

    @abstractmethod
    async def delete_manifest(self, repository: str, digest: str, subject: str) -> None: ...

    @abstractmethod
    async def delete_tag(self, repository: str, tag: str) -> None: ...

    @abstractmethod
    async def list_tags(self, repository: str, last: str, limit: int) -> pb.NameList: ...

    @abstractmethod
    async def list_repositories(self, last: str, limit: int) -> pb.NameList: ...

    @abstractmethod
    async def list_referrers(self, repository: str, subject: str) -> list[bytes]: ...

    # The pull-through cache's records

    @abstractmethod
    async def touch_mirror(self, request: pb.MirrorTouchRequest) -> None: ...

    @abstractmethod
    async def mirror_tag_checked(self, repository: str, tag: str) -> pb.MirrorTagInfo: ...

    @abstractmethod
    async def purge_mirror(self) -> pb.MirrorPurgeResult: ...


class ForwardingBlobstore(BlobstoreAPI):
    """Every call to ``client``, unchanged."""

    def __init__(self, client: BlobstoreAPI) -> None:
        self.client = client

    @property
    def call_timeout(self) -> float:
        return self.client.call_timeout

    @property
    def channel(self) -> Any:
        return self.client.channel

    async def close(self) -> None:
        await self.client.close()

    async def stat_blob(self, repository: str, digest: str) -> pb.BlobInfo:
        return await self.client.stat_blob(repository, digest)

    async def read_blob(self, repository: str, digest: str, offset: int = 0, length: int = 0) -> BlobStream:
        return await self.client.read_blob(repository, digest, offset, length)

    async def delete_blob(self, repository: str, digest: str) -> None:
        await self.client.delete_blob(repository, digest)

    async def mount_blob(self, repository: str, digest: str, from_repository: str) -> pb.BlobInfo:
        return await self.client.mount_blob(repository, digest, from_repository)

    async def open_blob(self, repository: str, digest: str, method: str, inline_limit: int) -> pb.OpenBlobResponse:
        return await self.client.open_blob(repository, digest, method, inline_limit)

    async def write_upload(
        self,
        repository: str,
        upload_id: str,
        offset: int,
        data: AsyncIterator[bytes] | bytes,
        *,
        commit_digest: str = "",
        expected_length: int = -1,
        digest_algorithm: str = "",
        fresh_since: int = 0,
    ) -> pb.UploadInfo:
        return await self.client.write_upload(
            repository,
            upload_id,
            offset,
            data,
            commit_digest=commit_digest,
            expected_length=expected_length,
            digest_algorithm=digest_algorithm,
            fresh_since=fresh_since,
        )

    async def upload_status(self, repository: str, upload_id: str, fresh_since: int = 0) -> pb.UploadInfo:
        return await self.client.upload_status(repository, upload_id, fresh_since)

    async def cancel_upload(self, repository: str, upload_id: str, fresh_since: int = 0) -> None:
        await self.client.cancel_upload(repository, upload_id, fresh_since)

    async def commit_upload(self, repository: str, upload_id: str, digest: str, fresh_since: int = 0) -> pb.BlobInfo:
        return await self.client.commit_upload(repository, upload_id, digest, fresh_since)

    async def put_manifest(self, request: pb.PutManifestRequest) -> pb.ManifestInfo:
        return await self.client.put_manifest(request)

    async def get_manifest(self, repository: str, reference: str) -> pb.Manifest:
        return await self.client.get_manifest(repository, reference)

    async def delete_manifest(self, repository: str, digest: str, subject: str) -> None:
        await self.client.delete_manifest(repository, digest, subject)

    async def delete_tag(self, repository: str, tag: str) -> None:
        await self.client.delete_tag(repository, tag)

    async def list_tags(self, repository: str, last: str, limit: int) -> pb.NameList:
        return await self.client.list_tags(repository, last, limit)

    async def list_repositories(self, last: str, limit: int) -> pb.NameList:
        return await self.client.list_repositories(last, limit)

    async def list_referrers(self, repository: str, subject: str) -> list[bytes]:
        return await self.client.list_referrers(repository, subject)

    async def touch_mirror(self, request: pb.MirrorTouchRequest) -> None:
        await self.client.touch_mirror(request)

    async def mirror_tag_checked(self, repository: str, tag: str) -> pb.MirrorTagInfo:
        return await self.client.mirror_tag_checked(repository, tag)

    async def purge_mirror(self) -> pb.MirrorPurgeResult:
        return await self.client.purge_mirror()
