"""The blobstore's gRPC server: each call maps onto blobs, uploads or manifests.

A thread pool serves calls (drivers do blocking I/O); streams are read and written chunk by chunk,
so memory per call stays near one chunk whatever the blob size.

Around the servicer: credentials (``security.py``), metrics and request ids
(``grpc_instrumentation.py``), the standard gRPC health service with its storage check
(``health_checks.py``), and an HTTP listener for /_ping, /_ready and /metrics (``http_listener.py``).
"""

from __future__ import annotations

import functools
import logging
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.blobstore.blob_urls import BlobURLSigner, signing_key
from services.blobstore.blobs import Blobs
from services.blobstore.direct_reads import DirectReads
from services.blobstore.drivers import InvalidPath, StorageDriver, create
from services.blobstore.gc import GarbageCollector
from services.blobstore.gc_cache import CacheForgetter
from services.blobstore.grpc_instrumentation import CallObserver
from services.blobstore.health_checks import Readiness
from services.blobstore.http_listener import HTTPListener
from services.blobstore.manifests import Catalog, Manifests
from services.blobstore.mirror import MirrorRecords, Purger
from services.blobstore.purging import Periodic, purge_uploads
from services.blobstore.uploads import Uploads
from services.common import digests
from services.common.config import ConfigError, Settings
from services.common.errors import NAME_INVALID, RANGE_INVALID, UNKNOWN, RegistryError
from services.common.memory import limit_malloc_arenas
from services.common.metrics import UPLOAD_BYTES
from services.common.rpc import blobstore_pb2 as pb
from services.common.rpc import blobstore_pb2_grpc as pb_grpc
from services.common.rpc.security import interceptors as security_interceptors
from services.common.rpc.security import server_credentials
from services.common.rpc.status import abort

log = logging.getLogger("berth.blobstore")

F = TypeVar("F", bound=Callable[..., Any])


def _abort_for(context: grpc.ServicerContext, method: str, exc: Exception) -> None:
    """Ends a failed call with the status the gateway turns back into the same registry error."""
    if isinstance(exc, RegistryError):
        abort(context, exc)
    elif isinstance(exc, InvalidPath):
        abort(context, RegistryError(NAME_INVALID, {"reason": str(exc)}))
    elif isinstance(exc, grpc.RpcError):
        # Only a request stream raises this: the caller cancelled (its HTTP client went away).
        # Nobody is waiting for an answer, and it is not a blobstore failure.
        log.info("%s cancelled by the caller", method)
        context.abort(grpc.StatusCode.CANCELLED, "cancelled by the caller")
    else:
        log.exception("%s failed", method)  # the traceback stays here, under the request id
        abort(context, RegistryError(UNKNOWN))


def _errors_to_status(method: F) -> F:
    """Turns RegistryError (and driver path errors) into a gRPC status the gateway understands."""

    @functools.wraps(method)
    def unary(self: BlobstoreService, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except Exception as exc:  # noqa: BLE001 - every failure becomes the call's gRPC status
            _abort_for(context, method.__name__, exc)

    return unary  # type: ignore[return-value]


def _stream_errors_to_status(method: F) -> F:
    @functools.wraps(method)
    def streaming(self: BlobstoreService, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from method(self, request, context)
        except Exception as exc:  # noqa: BLE001 - every failure becomes the call's gRPC status
            _abort_for(context, method.__name__, exc)

    return streaming  # type: ignore[return-value]


def _drain(request_iterator: Iterator[Any]) -> None:
    """Reads what is left of a request stream before the call fails.

    A call that ends while its (asyncio) client is still writing loses its status there: grpc-aio
    reports INTERNAL "Internal error from Core" instead (grpc/grpc#36066), so a 416 or 404 would
    reach HTTP clients as a 500. Ending only after the client has sent everything avoids that.
    """
    try:
        for _ in request_iterator:
            pass
    except grpc.RpcError:
        pass  # the caller cancelled meanwhile


def _streaming_algorithm(head: pb.WriteUploadHeader) -> str:
    """What to hash a write's bytes with as they arrive: the algorithm of the digest it commits
    to (the one the commit checks), else the one the client announced, else sha256."""
    if head.commit_digest:
        return digests.parse(head.commit_digest).algorithm
    return head.digest_algorithm or digests.CANONICAL


def _counted(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Counts upload bytes as they arrive, so a long push shows on the graph while it runs."""
    for chunk in chunks:
        UPLOAD_BYTES.inc(len(chunk))
        yield chunk


class BlobstoreService(pb_grpc.BlobstoreServicer):
    def __init__(
        self, driver: StorageDriver, chunk_size: int, signer: BlobURLSigner | None = None, fresh_uploads_lifetime: float | None = None
    ) -> None:
        self.chunk_size = chunk_size
        self.blobs = Blobs(driver)
        # Large blob reads by signed URL from the HTTP listener (blobstore.public_url); None: off.
        self.direct_reads = DirectReads(self.blobs, signer) if signer is not None else None
        self.uploads = Uploads(driver, self.blobs, fresh_uploads_lifetime)
        self.manifests = Manifests(driver, self.blobs)
        self.catalog = Catalog(driver)
        self.mirror = MirrorRecords(driver, self.manifests, self.blobs, self.catalog)

    # Blobs

    @_errors_to_status
    def StatBlob(self, request: pb.BlobRef, context: grpc.ServicerContext) -> pb.BlobInfo:
        info = self.blobs.stat(request.repository, request.digest)
        return pb.BlobInfo(digest=info.digest, size=info.size)

    @_stream_errors_to_status
    def ReadBlob(self, request: pb.ReadBlobRequest, context: grpc.ServicerContext) -> Iterator[pb.Chunk]:
        size, chunks = self.blobs.read(request.repository, request.digest, request.offset, request.length, self.chunk_size)
        context.send_initial_metadata((("berth-size", str(size)),))
        for data in chunks:
            yield pb.Chunk(data=data)

    @_errors_to_status
    def DeleteBlob(self, request: pb.BlobRef, context: grpc.ServicerContext) -> pb.Empty:
        self.blobs.delete(request.repository, request.digest)
        return pb.Empty()

    @_errors_to_status
    def MountBlob(self, request: pb.MountRequest, context: grpc.ServicerContext) -> pb.BlobInfo:
        info = self.blobs.mount(request.repository, request.digest, request.from_repository)
        return pb.BlobInfo(digest=info.digest, size=info.size)

    @_errors_to_status
    def OpenBlob(self, request: pb.OpenBlobRequest, context: grpc.ServicerContext) -> pb.OpenBlobResponse:
        info = self.blobs.stat(request.repository, request.digest)  # the one link check
        unsupported = False
        if request.method:
            url = self.blobs.url(request.digest, request.method)
            if url is None and self.direct_reads is not None and request.method == "GET":
                url = self.direct_reads.url(request.repository, request.digest)
            if url:
                return pb.OpenBlobResponse(size=info.size, url=url)
            unsupported = url is None
        if info.size <= request.inline_limit:
            return pb.OpenBlobResponse(size=info.size, data=self.blobs.content(info), inline=True, urls_unsupported=unsupported)
        return pb.OpenBlobResponse(size=info.size, urls_unsupported=unsupported)

    # Uploads

    @_errors_to_status
    def WriteUpload(self, request_iterator: Iterator[pb.WriteUploadRequest], context: grpc.ServicerContext) -> pb.UploadInfo:
        first = next(request_iterator, None)
        if first is None or not first.HasField("header"):
            raise RegistryError(UNKNOWN, {"reason": "WriteUpload must start with a header"})
        try:
            return self._write(first.header, (message.data for message in request_iterator))
        except BaseException as exc:
            if not isinstance(exc, grpc.RpcError):
                _drain(request_iterator)
            raise

    @_errors_to_status
    def WriteUploadUnary(self, request: pb.WriteUploadUnaryRequest, context: grpc.ServicerContext) -> pb.UploadInfo:
        return self._write(request.header, iter((request.data,) if request.data else ()))

    def _write(self, head: pb.WriteUploadHeader, chunks: Iterator[bytes]) -> pb.UploadInfo:
        """What both write calls do with their header and data."""
        upload_id = head.upload_id
        data = _counted(chunks)
        # A whole blob in one call (a monolithic push, or a fresh session's only write): no session
        # in storage needed. (Only a fresh URL can name a session not stored: others go to write.)
        if head.commit_digest and (
            not upload_id or (head.fresh_since > 0 and self.uploads.unstored(head.repository, upload_id, head.fresh_since))
        ):
            if head.offset > 0:
                raise RegistryError(RANGE_INVALID, {"size": 0, "offset": head.offset})
            blob = self.uploads.store(head.repository, data, head.commit_digest, head.expected_length, upload_id)
            return pb.UploadInfo(size=blob.size, digest=blob.digest, started_at=int(time.time()))
        if not upload_id:
            raise RegistryError(UNKNOWN, {"reason": "a write without an upload id must commit"})
        algorithm = _streaming_algorithm(head)
        info = self.uploads.write(head.repository, upload_id, head.offset, data, head.expected_length, algorithm, head.fresh_since)
        if head.commit_digest:
            blob = self.uploads.commit(head.repository, upload_id, head.commit_digest)
            return pb.UploadInfo(upload_id=upload_id, size=blob.size, digest=blob.digest, started_at=info.started_at)
        return pb.UploadInfo(upload_id=upload_id, size=info.size, started_at=info.started_at)

    @_errors_to_status
    def StartUpload(self, request: pb.StartUploadRequest, context: grpc.ServicerContext) -> pb.UploadInfo:
        """Deprecated (the previous release's gateways): see the proto."""
        info = self.uploads.start(request.repository, request.digest_algorithm or digests.CANONICAL)
        return pb.UploadInfo(upload_id=info.upload_id, size=0, started_at=info.started_at)

    @_errors_to_status
    def UploadStatus(self, request: pb.UploadRef, context: grpc.ServicerContext) -> pb.UploadInfo:
        info = self.uploads.status(request.repository, request.upload_id, request.fresh_since)
        return pb.UploadInfo(upload_id=info.upload_id, size=info.size, started_at=info.started_at)

    @_errors_to_status
    def CancelUpload(self, request: pb.UploadRef, context: grpc.ServicerContext) -> pb.Empty:
        self.uploads.cancel(request.repository, request.upload_id, request.fresh_since)
        return pb.Empty()

    @_errors_to_status
    def CommitUpload(self, request: pb.CommitUploadRequest, context: grpc.ServicerContext) -> pb.BlobInfo:
        info = self.uploads.commit(request.repository, request.upload_id, request.digest, request.fresh_since)
        return pb.BlobInfo(digest=info.digest, size=info.size)

    # Manifests, tags, repositories

    @_errors_to_status
    def PutManifest(self, request: pb.PutManifestRequest, context: grpc.ServicerContext) -> pb.ManifestInfo:
        self.manifests.put(
            request.repository,
            request.digest,
            request.payload,
            tags=list(request.tags),
            required_blobs=list(request.required_blobs),
            required_manifests=list(request.required_manifests),
            subject=request.subject,
            referrer_descriptor=request.referrer_descriptor,
        )
        return pb.ManifestInfo(digest=request.digest, size=len(request.payload))

    @_errors_to_status
    def GetManifest(self, request: pb.ManifestRef, context: grpc.ServicerContext) -> pb.Manifest:
        found = self.manifests.get(request.repository, request.reference)
        return pb.Manifest(digest=found.digest, payload=found.payload)

    @_errors_to_status
    def DeleteManifest(self, request: pb.DeleteManifestRequest, context: grpc.ServicerContext) -> pb.Empty:
        self.manifests.delete(request.repository, request.digest, request.subject)
        return pb.Empty()

    @_errors_to_status
    def DeleteTag(self, request: pb.TagRef, context: grpc.ServicerContext) -> pb.Empty:
        self.manifests.delete_tag(request.repository, request.tag)
        return pb.Empty()

    @_errors_to_status
    def ListTags(self, request: pb.ListTagsRequest, context: grpc.ServicerContext) -> pb.NameList:
        page = self.manifests.list_tags(request.repository, request.last, request.limit)
        return pb.NameList(names=page.names, more=page.more)

    @_errors_to_status
    def ListRepositories(self, request: pb.ListRepositoriesRequest, context: grpc.ServicerContext) -> pb.NameList:
        page = self.catalog.list(request.last, request.limit)
        return pb.NameList(names=page.names, more=page.more)

    @_errors_to_status
    def ListReferrers(self, request: pb.ReferrersRequest, context: grpc.ServicerContext) -> pb.ReferrerList:
        return pb.ReferrerList(descriptors=self.manifests.referrers(request.repository, request.subject))

    # The pull-through cache's records

    @_errors_to_status
    def TouchMirror(self, request: pb.MirrorTouchRequest, context: grpc.ServicerContext) -> pb.Empty:
        self.mirror.touch(request.repository, list(request.manifests), list(request.blobs), request.checked_tag, request.ttl)
        return pb.Empty()

    @_errors_to_status
    def MirrorTagChecked(self, request: pb.TagRef, context: grpc.ServicerContext) -> pb.MirrorTagInfo:
        return pb.MirrorTagInfo(checked_at=self.mirror.tag_checked(request.repository, request.tag))

    @_errors_to_status
    def PurgeMirror(self, request: pb.Empty, context: grpc.ServicerContext) -> pb.MirrorPurgeResult:
        result = self.mirror.purge()
        return pb.MirrorPurgeResult(manifests=result.manifests, blobs=result.blobs)


# Messages may carry a whole manifest (4 MiB by default) plus framing.
MAX_MESSAGE_BYTES = 64 << 20

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Blobstore"].full_name
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass
class Blobstore:
    """One blobstore process's listeners, built (ports bound, files read) but not started, so a
    configuration that cannot work fails before anything answers."""

    server: grpc.Server
    health: health.HealthServicer
    readiness: Readiness
    http_listener: HTTPListener | None
    # Removes expired mirrored content (proxy.purge_interval); None when nothing is mirrored.
    purger: Purger | None = None
    # Upload purging and scheduled garbage collection (storage.maintenance).
    maintenance: list[Periodic] = field(default_factory=list)
    _stopped: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self.server.start()
        if self.http_listener is not None:
            self.http_listener.start()
        if self.purger is not None:
            self.purger.start()
        for task in self.maintenance:
            task.start()
        threading.Thread(target=self._serve_when_usable, name="blobstore-health", daemon=True).start()

    def stop(self, grace: float) -> None:
        """Says NOT_SERVING (health, /_ready) first, then lets calls in flight finish."""
        self._stopped.set()
        if self.purger is not None:
            self.purger.stop()
        for task in self.maintenance:
            task.stop()
        self.readiness.stopping()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace=grace).wait()
        if self.http_listener is not None:
            self.http_listener.stop()

    def _serve_when_usable(self) -> None:
        """SERVING once the storage takes a write: until then a probe keeps traffic away rather
        than letting every call fail. It stays SERVING until shutdown: a store that fails later
        (say, writes refused while reads work) shows in /_ready and the call metrics, and taking
        every replica of a shared store out of rotation at once would stop the reads too."""
        while not self._stopped.is_set():
            reason = self.readiness.check()
            if reason is None:
                for name in ("", SERVICE_NAME):
                    self.health.set(name, _SERVING)
                return
            self._stopped.wait(1.0)


def build(settings: Settings) -> Blobstore:
    """Raises ConfigError (naming the key) for files it cannot read or addresses it cannot use."""
    config = settings.blobstore
    credentials = server_credentials(config)
    driver = create(settings.storage.driver, settings.storage.driver_parameters)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="blobstore"),
        # The observer first, so refused calls are timed too.
        interceptors=[CallObserver(), *security_interceptors(config)],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Gateways reconnect (and so re-resolve a name listing every blobstore) every few
            # minutes, which spreads them over replicas added since; calls in flight finish first.
            ("grpc.max_connection_age_ms", 5 * 60 * 1000),
            ("grpc.max_connection_age_grace_ms", 6 * 3600 * 1000),
            # No BDP probing: it grows each upload stream's receive window far beyond the one
            # chunk a write takes at a time, which a large push then fills (RSS, make bench).
            ("grpc.http2.bdp_probe", 0),
        ],
    )
    signer = BlobURLSigner(config.public_url, signing_key(settings), config.url_expiry) if config.public_url else None
    # A session's first URL lives as long as an abandoned session would (the markers that guard
    # it are purged then), purging or not; every replica must have the same age.
    service = BlobstoreService(driver, config.chunk_size, signer, settings.storage.maintenance.uploadpurging.age)
    pb_grpc.add_BlobstoreServicer_to_server(service, server)
    health_servicer = health.HealthServicer()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, _NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        port = server.add_insecure_port(config.addr) if credentials is None else server.add_secure_port(config.addr, credentials)
    except RuntimeError as exc:
        raise ConfigError(f"blobstore.addr: cannot listen on {config.addr}: {exc}") from None
    if port == 0:
        raise ConfigError(f"blobstore.addr: cannot listen on {config.addr}")
    readiness = Readiness(driver)
    http_listener = (
        HTTPListener(config.http_addr, readiness, metrics=settings.metrics.enabled, direct_reads=service.direct_reads)
        if config.http_addr
        else None
    )
    purger = Purger(service.mirror, settings.proxy.purge_interval) if settings.proxy.enabled else None
    return Blobstore(server, health_servicer, readiness, http_listener, purger, maintenance_tasks(settings, service))


def maintenance_tasks(settings: Settings, service: BlobstoreService) -> list[Periodic]:
    """storage.maintenance's periodic work: upload purging (on by default) and online GC."""
    tasks = []
    purging = settings.storage.maintenance.uploadpurging
    if purging.enabled:
        tasks.append(Periodic("upload-purging", purging.interval, lambda: purge_uploads(service.uploads, purging.age, purging.dryrun)))
    else:  # users' sessions stay, Berth's own leftovers (ended sessions' markers) do not
        tasks.append(Periodic("upload-markers", purging.interval, lambda: purge_uploads(service.uploads, purging.age, sessions=False)))
    gc = settings.storage.maintenance.gc
    if gc.enabled:
        driver = service.blobs.driver
        forget = CacheForgetter.from_settings(settings.cache_lru)  # the gateways' cache_lru
        tasks.append(
            Periodic(
                "garbage-collection",
                gc.interval,
                lambda: GarbageCollector(driver, delay=gc.delay, forget=forget).run(),
                first=random.uniform(0.5, 1.0) * gc.interval,
            )
        )
    return tasks


def serve(settings: Settings) -> None:
    """Runs the blobstore until SIGINT/SIGTERM, then lets calls in flight finish (up to 10 s)."""
    limit_malloc_arenas()  # before the worker threads exist
    blobstore = build(settings)
    blobstore.start()
    log.info(
        "blobstore listening on %s (storage: %s, security: %s%s)",
        settings.blobstore.addr,
        settings.storage.driver,
        settings.blobstore.effective_security,
        f", http: {settings.blobstore.http_addr}" if blobstore.http_listener else "",
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("blobstore stopping")
    blobstore.stop(grace=10)
