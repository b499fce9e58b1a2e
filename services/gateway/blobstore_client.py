"""The gateway's side of the blobstore contract: one long-lived gRPC channel per process, and
calls that raise RegistryError exactly as the blobstore raised it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio

from services.common import request_ids
from services.common.config import BlobstoreSettings
from services.common.errors import UNAVAILABLE, RegistryError
from services.common.metrics import RPC_DURATION
from services.common.rpc import blobstore_pb2 as pb
from services.common.rpc import blobstore_pb2_grpc as pb_grpc
from services.common.rpc.security import call_metadata, channel_credentials
from services.common.rpc.status import from_rpc_error
from services.gateway.blobstore_api import BlobstoreAPI, BlobStream

__all__ = ["BlobStream", "BlobstoreClient"]

MAX_MESSAGE_BYTES = 64 << 20


def _convert(exc: grpc.aio.AioRpcError) -> RegistryError:
    return from_rpc_error(exc.code(), exc.trailing_metadata(), exc.details() or "")


def _observe(method: str, code: str, started: float) -> None:
    RPC_DURATION.labels(side="client", method=method, code=code).observe(time.perf_counter() - started)


def _code_of(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code().name
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELLED"
    if isinstance(exc, RegistryError) and exc.code is UNAVAILABLE:
        return "UNAVAILABLE"  # no connection within the call timeout: the call never went out
    return "UNKNOWN"


class BlobstoreClient(BlobstoreAPI):
    """Every call carries the credentials (``metadata``: the token, if any) and the current request
    id, and is timed in RPC_DURATION. Explicit per-call metadata rather than grpc.aio interceptors:
    those wrap every call in extra tasks and change how cancellations surface, which
    ``write_upload`` depends on."""

    def __init__(
        self,
        target: str,
        call_timeout: float = 30.0,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: tuple[tuple[str, str], ...] = (),
        server_name: str = "",
    ) -> None:
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Reconnect within about a second of a blobstore (re)start, not gRPC's default of
            # up to two minutes of backoff, during which every call would fail.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
            # A target naming several blobstores (dns:///blobstore-headless:5001) spreads calls
            # over all of them instead of pinning this gateway to the first.
            ("grpc.lb_policy_name", "round_robin"),
            # No BDP probing: it grows each stream's receive window far beyond what a reader takes
            # (about 60 MiB buffered per slow concurrent blob read, tests/e2e/test_mirror.py).
            ("grpc.http2.bdp_probe", 0),
        ]
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        else:
            if server_name:  # the certificate names a host other than the target's
                options.append(("grpc.ssl_target_name_override", server_name))
            self._channel = grpc.aio.secure_channel(target, credentials, options=options)
        self.stub = pb_grpc.BlobstoreStub(self._channel)
        self._call_timeout = call_timeout
        self._credentials_metadata = metadata

    @property
    def channel(self) -> Any:
        return self._channel

    @property
    def call_timeout(self) -> float:
        return self._call_timeout

    @classmethod
    def from_settings(cls, settings: BlobstoreSettings) -> BlobstoreClient:
        """Raises ConfigError, naming the key, when a certificate or key file cannot be read."""
        return cls(
            settings.connect_to,
            settings.call_timeout,
            credentials=channel_credentials(settings),
            metadata=call_metadata(settings),
            server_name=settings.tls.servername,
        )

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        request_id = request_ids.current()
        # Anything but printable ASCII is an illegal header value: gRPC would fail the call.
        if not request_id or not (request_id.isascii() and request_id.isprintable()):
            return self._credentials_metadata
        return (*self._credentials_metadata, (request_ids.METADATA_KEY, request_id))

    async def close(self) -> None:
        await self.channel.close()

    async def _ready(self) -> None:
        """Waits (up to the call timeout) for a connection before a stream starts: a stream has no
        deadline of its own, so it cannot simply wait for a restarting blobstore as short calls do."""
        if self.channel.get_state(try_to_connect=True) is grpc.ChannelConnectivity.READY:
            return
        try:
            await asyncio.wait_for(self.channel.channel_ready(), self.call_timeout)
        except TimeoutError:
            raise RegistryError(UNAVAILABLE, {"service": "blobstore"}) from None

    async def _unary(self, method: str, request: Any) -> Any:
        """One short call; it waits (up to the timeout) for a blobstore that is restarting."""
        started = time.perf_counter()
        code = "OK"
        try:
            return await getattr(self.stub, method)(request, wait_for_ready=True, timeout=self.call_timeout, metadata=self._metadata())
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
            raise _convert(exc) from None
        except BaseException as exc:
            code = _code_of(exc)
            raise
        finally:
            _observe(method, code, started)

    # Blobs

    async def stat_blob(self, repository: str, digest: str) -> pb.BlobInfo:
        return await self._unary("StatBlob", pb.BlobRef(repository=repository, digest=digest))

    async def read_blob(self, repository: str, digest: str, offset: int = 0, length: int = 0) -> BlobStream:
        """Opens a read; raises before returning if the blob cannot be read.

        Timed until the stream ends (or the reader stops early: CANCELLED)."""
        started = time.perf_counter()
        try:
            await self._ready()
            call = self.stub.ReadBlob(
                pb.ReadBlobRequest(repository=repository, digest=digest, offset=offset, length=length), metadata=self._metadata()
            )
            first = await call.read()
            metadata = await call.initial_metadata()
        except grpc.aio.AioRpcError as exc:
            _observe("ReadBlob", exc.code().name, started)
            raise _convert(exc) from None
        except BaseException as exc:
            _observe("ReadBlob", _code_of(exc), started)
            raise
        size = int(dict(metadata or ()).get("berth-size", 0))

        async def chunks() -> AsyncIterator[bytes]:
            message = first
            code = "CANCELLED"
            try:
                while message is not grpc.aio.EOF:
                    yield message.data
                    message = await call.read()
                code = "OK"
            except grpc.aio.AioRpcError as exc:
                code = exc.code().name
                raise _convert(exc) from None
            finally:
                call.cancel()
                _observe("ReadBlob", code, started)

        return BlobStream(size, chunks())

    async def delete_blob(self, repository: str, digest: str) -> None:
        await self._unary("DeleteBlob", pb.BlobRef(repository=repository, digest=digest))

    async def mount_blob(self, repository: str, digest: str, from_repository: str) -> pb.BlobInfo:
        return await self._unary("MountBlob", pb.MountRequest(repository=repository, digest=digest, from_repository=from_repository))

    async def open_blob(self, repository: str, digest: str, method: str, inline_limit: int) -> pb.OpenBlobResponse:
        return await self._unary(
            "OpenBlob", pb.OpenBlobRequest(repository=repository, digest=digest, method=method, inline_limit=inline_limit)
        )

    # Uploads

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
        empty): bytes in one short call, an iterator as a stream."""
        header = pb.WriteUploadHeader(
            repository=repository,
            upload_id=upload_id,
            offset=offset,
            commit_digest=commit_digest,
            expected_length=expected_length,
            digest_algorithm=digest_algorithm,
            fresh_since=fresh_since,
        )
        if isinstance(data, bytes):
            return await self._unary("WriteUploadUnary", pb.WriteUploadUnaryRequest(header=header, data=data))

        source_failure: list[Exception] = []

        async def messages() -> AsyncIterator[pb.WriteUploadRequest]:
            yield pb.WriteUploadRequest(header=header)
            try:
                async for chunk in data:
                    yield pb.WriteUploadRequest(data=chunk)
            except Exception as exc:
                source_failure.append(exc)
                raise

        started = time.perf_counter()
        code = "OK"
        try:
            await self._ready()
            return await self.stub.WriteUpload(messages(), metadata=self._metadata())
        except (grpc.aio.AioRpcError, asyncio.CancelledError) as exc:
            code = _code_of(exc)
            # When ``data`` fails (the HTTP client went away), gRPC cancels the call and reports
            # only a CancelledError; raise what really happened instead.
            if source_failure:
                raise source_failure[0] from None
            if isinstance(exc, grpc.aio.AioRpcError):
                raise _convert(exc) from None
            raise
        except BaseException as exc:
            code = _code_of(exc)
            raise
        finally:
            _observe("WriteUpload", code, started)

    async def upload_status(self, repository: str, upload_id: str, fresh_since: int = 0) -> pb.UploadInfo:
        return await self._unary("UploadStatus", pb.UploadRef(repository=repository, upload_id=upload_id, fresh_since=fresh_since))

    async def cancel_upload(self, repository: str, upload_id: str, fresh_since: int = 0) -> None:
        await self._unary("CancelUpload", pb.UploadRef(repository=repository, upload_id=upload_id, fresh_since=fresh_since))

    async def commit_upload(self, repository: str, upload_id: str, digest: str, fresh_since: int = 0) -> pb.BlobInfo:
        request = pb.CommitUploadRequest(repository=repository, upload_id=upload_id, digest=digest, fresh_since=fresh_since)
        return await self._unary("CommitUpload", request)

    # Manifests, tags, repositories, referrers

    async def put_manifest(self, request: pb.PutManifestRequest) -> pb.ManifestInfo:
        return await self._unary("PutManifest", request)

    async def get_manifest(self, repository: str, reference: str) -> pb.Manifest:
        return await self._unary("GetManifest", pb.ManifestRef(repository=repository, reference=reference))

    async def delete_manifest(self, repository: str, digest: str, subject: str) -> None:
        await self._unary("DeleteManifest", pb.DeleteManifestRequest(repository=repository, digest=digest, subject=subject))

    async def delete_tag(self, repository: str, tag: str) -> None:
        await self._unary("DeleteTag", pb.TagRef(repository=repository, tag=tag))

    async def list_tags(self, repository: str, last: str, limit: int) -> pb.NameList:
        return await self._unary("ListTags", pb.ListTagsRequest(repository=repository, last=last, limit=limit))

    async def list_repositories(self, last: str, limit: int) -> pb.NameList:
        return await self._unary("ListRepositories", pb.ListRepositoriesRequest(last=last, limit=limit))

    async def list_referrers(self, repository: str, subject: str) -> list[bytes]:
        reply = await self._unary("ListReferrers", pb.ReferrersRequest(repository=repository, subject=subject))
        return list(reply.descriptors)

    # The pull-through cache's records

    async def touch_mirror(self, request: pb.MirrorTouchRequest) -> None:
        await self._unary("TouchMirror", request)

    async def mirror_tag_checked(self, repository: str, tag: str) -> pb.MirrorTagInfo:
        return await self._unary("MirrorTagChecked", pb.TagRef(repository=repository, tag=tag))

    async def purge_mirror(self) -> pb.MirrorPurgeResult:
        return await self._unary("PurgeMirror", pb.Empty())
