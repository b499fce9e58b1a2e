"""S3 driver: Amazon S3 and S3-compatible stores (MinIO, Ceph, moto), through boto3.

A driver path is a key under ``rootdirectory``; directories are key prefixes, so they exist while
something lies below them. Every request is counted in STORAGE_CALLS; the aim is one request per
plain operation (a file's stat is one HeadObject, a directory's only costs a listing after that
misses).

Appendable writes. A registry upload arrives in chunks, each written by a fresh appending writer
that may run in another blobstore replica. S3 objects cannot be appended to, so while a path is
being written it is a multipart upload plus a *marker*: the object at the path itself, holding the
pending tail (under S3's 5 MiB minimum part size, so not yet a part) and, in its metadata, the
upload id, the number of parts and their total size. The marker makes the in-progress path
visible to stat (size = parts + tail, one HeadObject), list and delete like any file, and is all
a writer in another process needs to carry on. Reading or moving an in-progress path first
completes the upload into a plain object; appending to a plain object of 5 MiB or more starts a
new upload whose first part is a server-side copy of it, a smaller one is read back as the tail.

Locks. S3 has no lock service, only conditional requests: a held lock is an object under
``.berth-locks~/`` (a key no driver path maps to, so listings never show it), created only where none
is (If-None-Match), renewed while held and deleted after, both conditional on its ETag (If-Match).
The store must honour those headers, as S3 and moto do.
"""
from __future__ import annotations

import builtins
import email.utils
import hashlib
import heapq
import io
import logging
import random
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

import boto3
import botocore.config
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.exceptions import BotoCoreError, ClientError
from s3transfer.subscribers import BaseSubscriber

from services.blobstore.drivers.base import (
    FileInfo,
    FileWriter,
    InvalidOffset,
    PathNotFound,
    StorageDriver,
    StorageError,
    ThreadLocks,
    check_path,
)
from services.common.metrics import STORAGE_CALLS

log = logging.getLogger("berth.blobstore")

MiB = 1 << 20
# S3's limits: parts other than the last, part numbers, one CopyObject/UploadPartCopy source range,
# keys per DeleteObjects.
MIN_PART = 5 * MiB
MAX_PARTS = 10_000
MAX_COPY_PART = 5 << 30
DELETE_BATCH = 1000

# Metadata of a marker (S3 hands user metadata back lower-cased).
META_UPLOAD = "berth-upload"
META_PARTS = "berth-parts"
META_SIZE = "berth-size"

# One session per process: it loads S3's service model once for every client made from it. A
# session is not thread-safe (its clients are), hence the lock around making clients.
_SESSION = boto3.session.Session()
_SESSION_LOCK = threading.Lock()

_NAME_RE = re.compile(r"[A-Za-z0-9._-]+")
_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}
# A conditional request's condition failed (412), or it lost a race with another one (409).
_CONFLICT_CODES = {"412", "PreconditionFailed", "409", "ConditionalRequestConflict"}

LOCKS = ".berth-locks~"
# Seconds after its last renewal (by the store's clock) that a lock object counts as left by a
# holder that died; holders renew every third of it, waiters then take it over. Half the gateway's
# call timeout: a write held up by a dead holder still gets its answer.
LOCK_LEASE = 15.0
# Seconds between attempts on a lock another process holds: the first wait, doubling up to the last.
LOCK_WAIT = (0.005, 0.1)


class _Missing(StorageError):
    """The key (or upload) is not there; callers turn it into PathNotFound for their path."""


class _BadRange(StorageError):
    """A ranged read started at or past the end of the object."""


class _Conflict(StorageError):
    """A conditional request found the object other than it required."""


def _translate(operation: str, exc: Exception) -> StorageError:
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _MISSING_CODES or code == "NoSuchUpload":
            return _Missing(f"s3 {operation}: {code}")
        if code == "InvalidRange":
            return _BadRange(f"s3 {operation}: {code}")
        if code in _CONFLICT_CODES:
            return _Conflict(f"s3 {operation}: {code}")
        return StorageError(f"s3 {operation} failed: {code or exc}")
    return StorageError(f"s3 {operation} failed: {type(exc).__name__}: {exc}")


def _count_request(event_name: str = "", **_: Any) -> None:
    # "before-send.s3.HeadObject": once per HTTP request, retries included.
    STORAGE_CALLS.labels("s3", event_name.rsplit(".", 1)[-1]).inc()


@dataclass(frozen=True)
class _Head:
    """What a HeadObject or GetObject said about a key."""

    length: int  # bytes in the object itself (a marker's tail)
    modified: float
    etag: str
    metadata: dict[str, str]

    @classmethod
    def of(cls, response: dict[str, Any]) -> _Head:
        return cls(
            response["ContentLength"],
            response["LastModified"].timestamp(),
            response.get("ETag", ""),
            response.get("Metadata") or {},
        )

    @property
    def upload_id(self) -> str:
        return self.metadata.get(META_UPLOAD, "")

    @property
    def parts(self) -> int:
        return int(self.metadata.get(META_PARTS, "0"))

    @property
    def parts_size(self) -> int:
        return int(self.metadata.get(META_SIZE, "0"))

    @property
    def size(self) -> int:
        """Bytes of the file: a marker's parts count too."""
        return self.parts_size + self.length if self.upload_id else self.length


class _SizeGiven(BaseSubscriber):
    """Tells a managed copy the source's size and ETag, which saves it a HeadObject."""

    def __init__(self, size: int, etag: str) -> None:
        self._size = size
        self._etag = etag

    def on_queued(self, future: Any, **kwargs: Any) -> None:
        future.meta.provide_transfer_size(self._size)
        future.meta.provide_object_etag(self._etag)


class S3Driver(StorageDriver):
    name = "s3"
    # Keys per ListObjectsV2 request of children() (S3's maximum; tests make pages small).
    children_page = 1000

    def __init__(self, parameters: dict[str, Any]) -> None:
        self.bucket: str = parameters["bucket"]
        if not self.bucket:
            raise StorageError("storage.s3.bucket is required")
        self.prefix = str(parameters.get("rootdirectory", "")).strip("/")
        self.chunksize = max(int(parameters.get("chunksize", 10 * MiB)), MIN_PART)
        self.concurrency = max(int(parameters.get("uploadconcurrency", 4)), 1)
        self.redirect_expiry = int(parameters.get("redirectexpiry", 300))
        self.sse: dict[str, str] = {}
        if parameters.get("encrypt"):
            keyid = parameters.get("keyid", "")
            self.sse = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": keyid} if keyid else {"ServerSideEncryption": "AES256"}
        self.copy_config = TransferConfig(
            multipart_threshold=int(parameters.get("multipartcopythresholdsize", 32 * MiB)),
            multipart_chunksize=int(parameters.get("multipartcopychunksize", 32 * MiB)),
            max_concurrency=int(parameters.get("multipartcopymaxconcurrency", 8)),
        )
        self.client = _client(parameters)
        self._thread_locks = ThreadLocks()

    # Keys

    def _key(self, path: str) -> str:
        return f"{self.prefix}/{path[1:]}" if self.prefix else path[1:]

    def _dir_prefix(self, path: str) -> str:
        """The prefix every key below the directory ``path`` starts with."""
        if path == "/":
            return f"{self.prefix}/" if self.prefix else ""
        return self._key(path) + "/"

    def _call(self, operation: str, **params: Any) -> Any:
        """One request on the bucket; failures become StorageError (_Missing for absent keys)."""
        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **params)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(operation, exc) from exc

    def _head(self, key: str) -> _Head | None:
        try:
            return _Head.of(self._call("head_object", Key=key))
        except _Missing:
            return None

    def _pages(self, operation: str, **params: Any) -> Iterator[dict[str, Any]]:
        try:
            yield from self.client.get_paginator(operation).paginate(Bucket=self.bucket, **params)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(operation, exc) from exc

    # Reading

    def get_content(self, path: str) -> bytes:
        check_path(path)
        key = self._key(path)
        for _ in range(3):
            head, body = self._get(path, key)
            data = _read_closing(body)
            if not head.upload_id:
                return data
            self._complete(path, key, head, data)
        raise StorageError(f"{path}: still being written after completing it")

    def reader(self, path: str, offset: int = 0) -> BinaryIO:
        check_path(path)
        if offset < 0:
            raise InvalidOffset(path, offset)
        key = self._key(path)
        for _ in range(3):
            try:
                head, body = self._get(path, key, offset)
            except _BadRange:
                # Only an offset at or past the end gets here: at the end is an empty read.
                found = self._head(key)
                if found is None:
                    raise PathNotFound(path) from None
                if found.upload_id:
                    self._complete(path, key, found)
                    continue
                if offset == found.size:
                    return io.BytesIO(b"")
                raise InvalidOffset(path, offset) from None
            if not head.upload_id:
                return cast(BinaryIO, body)
            tail = _read_closing(body) if offset == 0 else None
            if tail is None:
                body.close()
            self._complete(path, key, head, tail)
        raise StorageError(f"{path}: still being written after completing it")

    def _get(self, path: str, key: str, offset: int = 0) -> tuple[_Head, Any]:
        params: dict[str, Any] = {"Key": key}
        if offset:
            params["Range"] = f"bytes={offset}-"
        try:
            response = self._call("get_object", **params)
        except _Missing:
            raise PathNotFound(path) from None
        return _Head.of(response), response["Body"]

    def stat(self, path: str) -> FileInfo:
        check_path(path, allow_root=True)
        if path != "/":
            head = self._head(self._key(path))
            if head is not None:
                return FileInfo(path, head.size, head.modified, False)
        # Not a file: a directory if any key lies below it (the root always is one).
        page = self._call("list_objects_v2", Prefix=self._dir_prefix(path), MaxKeys=1)
        if page.get("KeyCount", 0):
            return FileInfo(path, 0, page["Contents"][0]["LastModified"].timestamp(), True)
        if path == "/":
            return FileInfo(path, 0, 0.0, True)
        raise PathNotFound(path)

    def file_size(self, path: str) -> int | None:
        check_path(path)
        head = self._head(self._key(path))
        return None if head is None else head.size

    def list(self, path: str) -> list[str]:
        check_path(path, allow_root=True)
        prefix = self._dir_prefix(path)
        base = "" if path == "/" else path
        names: set[str] = set()
        for page in self._pages("list_objects_v2", Prefix=prefix, Delimiter="/"):
            names.update(item["Key"][len(prefix) :] for item in page.get("Contents", ()))
            names.update(item["Prefix"][len(prefix) : -1] for item in page.get("CommonPrefixes", ()))
        children = sorted(f"{base}/{name}" for name in names if _NAME_RE.fullmatch(name) and name not in (".", ".."))
        if not children and path != "/":
            raise PathNotFound(path)
        return children

    def children(self, path: str, after: str = "") -> Iterator[str]:
        """ListObjectsV2 with Delimiter and StartAfter, a page at a time, so a caller that stops
        early reads only the pages it needed.

        S3 orders a folder ``a/`` by its key, after ``a-b/`` and ``a.b/``, where the name ``a``
        sorts first; so a name is handed out only once no later key can hold a smaller one."""
        check_path(path, allow_root=True)
        prefix = self._dir_prefix(path)
        base = "" if path == "/" else path
        params: dict[str, Any] = {"Prefix": prefix, "Delimiter": "/", "MaxKeys": self.children_page}
        if after:
            params["StartAfter"] = prefix + after
        pending: list[str] = []
        emitted = after
        found = False
        for page in self._pages("list_objects_v2", **params):
            keys = [item["Key"][len(prefix) :] for item in page.get("Contents", ())]
            keys += [item["Prefix"][len(prefix) :] for item in page.get("CommonPrefixes", ())]
            if not keys:
                continue
            found = True
            for key in keys:
                name = key[:-1] if key.endswith("/") else key
                if name > after and _NAME_RE.fullmatch(name) and name not in (".", ".."):
                    heapq.heappush(pending, name)
            # Every later key is greater than this page's last one: no later name sorts below
            # its part before the first "-" or "." (those sort below "/"), or below all of it.
            high = max(keys)
            cut = min((i for i in (high.find("-"), high.find(".")) if i >= 0), default=-1)
            bound = high[:cut] if cut >= 0 else high.rstrip("/") + "\0"
            while pending and pending[0] < bound:
                name = heapq.heappop(pending)
                if name > emitted:
                    emitted = name
                    yield f"{base}/{name}"
        while pending:
            name = heapq.heappop(pending)
            if name > emitted:
                emitted = name
                yield f"{base}/{name}"
        if not found and path != "/" and not (after and self.stat(path).is_dir):
            raise PathNotFound(path)

    def walk(self, path: str) -> Iterator[FileInfo]:
        """One listing of everything below ``path`` rather than a stat per entry. Sizes come from
        the listing, so a file still being written shows its pending tail only."""
        check_path(path, allow_root=True)
        prefix = self._dir_prefix(path)
        base = "" if path == "/" else path
        files: dict[str, FileInfo] = {}
        dirs: dict[str, float] = {}
        for page in self._pages("list_objects_v2", Prefix=prefix):
            for item in page.get("Contents", ()):
                parts = item["Key"][len(prefix) :].split("/")
                if not all(_NAME_RE.fullmatch(p) and p not in (".", "..") for p in parts):
                    continue
                modified = item["LastModified"].timestamp()
                for depth in range(1, len(parts)):
                    dirs.setdefault(base + "/" + "/".join(parts[:depth]), modified)
                full = base + "/" + "/".join(parts)
                files[full] = FileInfo(full, item["Size"], modified, False)
        if not files and path != "/":
            raise PathNotFound(path)
        children: dict[str, list[str]] = {}
        for entry in [*dirs, *files]:
            children.setdefault(entry.rsplit("/", 1)[0] or "/", []).append(entry)

        def below(directory: str) -> Iterator[FileInfo]:
            for child in sorted(children.get(directory, ())):
                if child in dirs:
                    yield FileInfo(child, 0, dirs[child], True)
                    yield from below(child)
                else:
                    yield files[child]

        yield from below(path)

    def redirect_url(self, path: str, method: str = "GET") -> str | None:
        check_path(path)
        operation = {"GET": "get_object", "HEAD": "head_object"}.get(method.upper())
        if operation is None:
            return None
        # Signed locally: no request to the store.
        return cast(str, self.client.generate_presigned_url(
            operation, Params={"Bucket": self.bucket, "Key": self._key(path)}, ExpiresIn=self.redirect_expiry
        ))

    # Writing

    def put_content(self, path: str, data: bytes) -> None:
        check_path(path)
        self._call("put_object", Key=self._key(path), Body=data, **self.sse)

    def writer(self, path: str, append: bool = False) -> FileWriter:
        check_path(path)
        key = self._key(path)
        if not append:
            return _Writer(self, key)
        try:
            response = self._call("get_object", Key=key)
        except _Missing:
            return _Writer(self, key)
        head, body = _Head.of(response), response["Body"]
        if head.upload_id or head.length < MIN_PART:
            return _Writer(self, key, head=head, tail=_read_closing(body))
        body.close()  # large enough to become the first part by a server-side copy
        return _Writer(self, key, head=head, copy_base=True)

    def move(self, source: str, dest: str) -> None:
        check_path(source)
        check_path(dest)
        src, dst = self._key(source), self._key(dest)
        head = self._head(src)
        if head is None:
            raise PathNotFound(source)
        if head.upload_id:
            head = self._complete(source, src, head)
        if src == dst:
            return
        extra = dict(self.sse)
        if head.size < self.copy_config.multipart_threshold:
            # One CopyObject: no transfer manager (and its thread pool) for the common case.
            self._call("copy_object", Key=dst, CopySource={"Bucket": self.bucket, "Key": src}, CopySourceIfMatch=head.etag, **extra)
            self._call("delete_object", Key=src)
            return
        try:
            with create_transfer_manager(self.client, self.copy_config) as manager:
                manager.copy(
                    copy_source={"Bucket": self.bucket, "Key": src},
                    bucket=self.bucket,
                    key=dst,
                    extra_args=extra,
                    subscribers=[_SizeGiven(head.size, head.etag)],
                ).result()
        except (ClientError, BotoCoreError) as exc:
            raise _translate("copy", exc) from exc
        self._call("delete_object", Key=src)

    def delete(self, path: str) -> None:
        check_path(path)
        prefix = self._dir_prefix(path)
        keys = [item["Key"] for page in self._pages("list_objects_v2", Prefix=prefix) for item in page.get("Contents", ())]
        if keys:
            # Uploads first: a marker deleted before its upload would leave the parts unfindable.
            self._abort_uploads(prefix)
            for start in range(0, len(keys), DELETE_BATCH):
                batch = [{"Key": k} for k in keys[start : start + DELETE_BATCH]]
                reply = self._call("delete_objects", Delete={"Objects": batch, "Quiet": True})
                if reply.get("Errors"):
                    first = reply["Errors"][0]
                    raise StorageError(f"s3 delete_objects: {first.get('Code')} on {first.get('Key')}")
            return
        key = self._key(path)
        head = self._head(key)
        if head is None:
            raise PathNotFound(path)
        if head.upload_id:
            self._abort(key, head.upload_id)
        self._call("delete_object", Key=key)

    def delete_files(self, paths: builtins.list[str]) -> None:
        """DeleteObjects, up to 1000 keys a request; only for plain files (no marker of a
        file being written: blobs and links are never appended to)."""
        keys = [self._key(check_path(p)) for p in paths]
        for start in range(0, len(keys), DELETE_BATCH):
            batch = [{"Key": k} for k in keys[start : start + DELETE_BATCH]]
            reply = self._call("delete_objects", Delete={"Objects": batch, "Quiet": True})
            if reply.get("Errors"):
                first = reply["Errors"][0]
                raise StorageError(f"s3 delete_objects: {first.get('Code')} on {first.get('Key')}")

    def purge_temporary(self, older_than: float, dryrun: bool = False) -> builtins.list[str]:
        """Incomplete multipart uploads under the root started before ``older_than``: what a
        multipart copy that died leaves (billed storage, invisible to listings). Uploads below an
        upload session's folder are left to the session's own purge, which goes by its start time
        (and aborts them with the folder): a store's Initiated date is not always to be trusted
        (moto reports a fixed one), a session's is."""
        found = []
        for page in self._pages("list_multipart_uploads", Prefix=self._dir_prefix("/")):
            for upload in page.get("Uploads", ()):
                if "/_uploads/" in upload["Key"] or upload["Initiated"].timestamp() >= older_than:
                    continue
                if not dryrun:
                    self._abort(upload["Key"], upload["UploadId"])
                found.append(f"multipart upload {upload['UploadId']} of {upload['Key']}")
        return found

    # Locks

    @contextmanager
    def lock(self, path: str) -> Iterator[None]:
        """The lock object's key is named by the path's hash. Threads of this process queue on a
        thread lock first, so only one of them at a time polls the store."""
        check_path(path)
        key = f"{self._dir_prefix('/')}{LOCKS}/{hashlib.sha256(path.encode()).hexdigest()}"
        with self._thread_locks.hold(path):
            lease = _Lease(self, key, self._acquire(key))
            try:
                yield
            finally:
                lease.release()

    def _acquire(self, key: str) -> str:
        """Waits until the lock object ``key`` is this caller's; returns its ETag."""
        wait = LOCK_WAIT[0]
        while True:
            try:
                return self._put_lock(key, IfNoneMatch="*")
            except _Conflict:
                pass
            held = self._lock_age(key)
            if held is None:
                continue  # released meanwhile
            etag, age = held
            if age > LOCK_LEASE:
                try:
                    # Its holder stopped renewing it: take it over. The ETag condition lets only
                    # one waiter do so, and only if the holder has not renewed it after all.
                    return self._put_lock(key, IfMatch=etag)
                except (_Conflict, _Missing):
                    continue
            time.sleep(wait * random.uniform(0.5, 1.5))
            wait = min(wait * 2, LOCK_WAIT[1])

    def _put_lock(self, key: str, **condition: str) -> str:
        """Writes a lock object of unique content (so a unique ETag) if ``condition`` holds."""
        body = uuid.uuid4().hex.encode()
        return cast(str, self._call("put_object", Key=key, Body=body, **condition, **self.sse)["ETag"])

    def _lock_age(self, key: str) -> tuple[str, float] | None:
        """The ETag of the lock object and seconds since it was written, both by the store's clock
        (its Date header), so a skewed clock here cannot make a live holder's lock look stale."""
        try:
            response = self._call("head_object", Key=key)
        except _Missing:
            return None
        date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        now = email.utils.parsedate_to_datetime(date).timestamp() if date else time.time()
        return response["ETag"], now - response["LastModified"].timestamp()

    # Multipart plumbing, shared with the writer

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self._call("abort_multipart_upload", Key=key, UploadId=upload_id)
        except _Missing:
            pass  # already completed or aborted

    def _abort_uploads(self, prefix: str, exact: str | None = None) -> None:
        """Aborts every multipart upload under ``prefix`` (only the key ``exact``, if given)."""
        for page in self._pages("list_multipart_uploads", Prefix=prefix):
            for upload in page.get("Uploads", ()):
                if exact is None or upload["Key"] == exact:
                    self._abort(upload["Key"], upload["UploadId"])

    def _complete(self, path: str, key: str, head: _Head, tail: bytes | None = None) -> _Head:
        """Turns a marker and its upload into the plain object; returns what the object is now."""
        try:
            return self._complete_upload(key, head, tail)
        except _Missing:
            # Completed meanwhile (by another reader or replica): the object is whole now.
            found = self._head(key)
            if found is None:  # cancelled or deleted meanwhile
                raise PathNotFound(path) from None
            if found.upload_id:
                raise StorageError(f"s3 {key}: upload vanished while completing it") from None
            return found

    def _complete_upload(self, key: str, head: _Head, tail: bytes | None) -> _Head:
        if tail is None:
            tail = _read_closing(self._call("get_object", Key=key)["Body"]) if head.length else b""
        parts = []
        for page in self._pages("list_parts", Key=key, UploadId=head.upload_id):
            # Parts past the marker's count are from a writer that failed before its marker.
            parts += [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in page.get("Parts", ()) if p["PartNumber"] <= head.parts]
        if tail:
            reply = self._call("upload_part", Key=key, UploadId=head.upload_id, PartNumber=head.parts + 1, Body=tail)
            parts.append({"PartNumber": head.parts + 1, "ETag": reply["ETag"]})
        if len(parts) != head.parts + (1 if tail else 0):
            raise StorageError(f"s3 {key}: the upload lacks parts its marker counts")
        parts.sort(key=lambda p: p["PartNumber"])
        reply = self._call("complete_multipart_upload", Key=key, UploadId=head.upload_id, MultipartUpload={"Parts": parts})
        return _Head(head.size, head.modified, reply.get("ETag", ""), {})


class _Lease:
    """A held lock object, rewritten (If-Match its ETag) every third of LOCK_LEASE until released,
    so it never looks stale while its holder lives, however long it holds it."""

    def __init__(self, driver: S3Driver, key: str, etag: str) -> None:
        self._driver = driver
        self._key = key
        self._etag = etag
        self._released = threading.Event()
        self._renewer = threading.Thread(target=self._renew, name="s3-lock-renewer", daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        while not self._released.wait(LOCK_LEASE / 3):
            try:
                self._etag = self._driver._put_lock(self._key, IfMatch=self._etag)
            except StorageError as exc:
                log.warning("lock %s not renewed (%s): it may be taken over while held", self._key, exc)

    def release(self) -> None:
        self._released.set()
        self._renewer.join()
        try:
            self._driver._call("delete_object", Key=self._key, IfMatch=self._etag)
        except (_Conflict, _Missing):
            log.warning("lock %s was taken over while held: its renewals failed for %ss", self._key, LOCK_LEASE)


class _Writer(FileWriter):
    """Appends to one key: full parts go out as they fill (``concurrency`` at a time), the rest
    waits in memory and, at commit, becomes the marker's tail (or a plain object when small)."""

    def __init__(
        self,
        driver: S3Driver,
        key: str,
        *,
        head: _Head | None = None,
        tail: bytes = b"",
        copy_base: bool = False,
    ) -> None:
        self._driver = driver
        self._key = key
        self._head = head
        self._upload_id = head.upload_id if head else ""
        self._next_part = (head.parts + 1) if head and head.upload_id else 1
        self._parts_size = head.parts_size if head and head.upload_id else 0
        # A plain object of MIN_PART or more, to copy in as the first part(s) when needed.
        self._base = head.length if copy_base and head else 0
        self._buffer = bytearray(tail)
        self._inflight: deque[Future[Any]] = deque()
        self._pool: ThreadPoolExecutor | None = None
        # Whether commit has anything to store: new bytes, or a path that must come to exist.
        self._dirty = head is None
        # A part failed: the marker must not be rewritten (it would count parts that are not
        # there); the previous one stays valid, so the caller resumes from the last good offset.
        self._failed = False
        self._created_upload = False
        self._closed = False
        self._lock = threading.Lock()

    def write(self, data: bytes) -> int:
        if self._closed:
            raise StorageError("write to a closed writer")
        if data:
            self._dirty = True
            self._buffer += data
            size = self._driver.chunksize
            while len(self._buffer) >= size:
                with memoryview(self._buffer) as view:
                    part = bytes(view[:size])  # one copy, not two
                del self._buffer[:size]
                self._send(part)
        return len(data)

    @property
    def size(self) -> int:
        return self._parts_size + self._base + len(self._buffer)

    def commit(self) -> None:
        self._finish()

    def close(self) -> None:
        # Nothing may be lost for the next appending writer: closing stores like committing.
        self._finish()

    def cancel(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._drain(cancel=True)
        if self._upload_id:
            self._driver._abort(self._key, self._upload_id)
        # Predecessors' uploads too, and any a crashed writer left without a marker.
        self._driver._abort_uploads(self._key, exact=self._key)
        self._driver._call("delete_object", Key=self._key)

    # Parts

    def _start_upload(self) -> None:
        if not self._upload_id:
            reply = self._driver._call("create_multipart_upload", Key=self._key, **self._driver.sse)
            self._upload_id = reply["UploadId"]
            self._created_upload = True
        if self._base:
            self._copy_base()

    def _copy_base(self) -> None:
        """The existing object becomes the first part(s), copied by the store, not through us."""
        assert self._head is not None
        size, pieces = self._base, -(-self._base // MAX_COPY_PART)
        step = -(-size // pieces)
        for start in range(0, size, step):
            end = min(size, start + step) - 1
            self._driver._call(
                "upload_part_copy",
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=self._claim_part(),
                CopySource={"Bucket": self._driver.bucket, "Key": self._key},
                CopySourceRange=f"bytes={start}-{end}",
                CopySourceIfMatch=self._head.etag,
            )
        self._parts_size += size
        self._base = 0

    def _claim_part(self) -> int:
        number = self._next_part
        if number > MAX_PARTS:
            raise StorageError(f"s3 {self._key}: more than {MAX_PARTS} parts (raise storage.s3.chunksize)")
        self._next_part += 1
        return number

    def _send(self, part: bytes) -> None:
        self._start_upload()
        number = self._claim_part()
        # Bounded memory: wait for the oldest part before holding another one.
        while len(self._inflight) >= self._driver.concurrency:
            try:
                self._inflight.popleft().result()
            except BaseException:
                self._failed = True
                raise
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._driver.concurrency, thread_name_prefix="s3-part")
        self._inflight.append(self._pool.submit(
            self._driver._call, "upload_part", Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=part
        ))
        self._parts_size += len(part)

    def _drain(self, cancel: bool = False) -> None:
        """Waits for the parts in flight; the first failure is raised once all have ended."""
        failure: BaseException | None = None
        while self._inflight:
            future = self._inflight.popleft()
            if cancel:
                future.cancel()
            try:
                future.result()
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after the others ended
                failure = failure or exc
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if failure is not None and not cancel:
            self._failed = True
            raise failure

    def _finish(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            if self._failed:
                self._drain(cancel=True)
                if self._created_upload:  # nothing refers to it: no marker names it
                    self._driver._abort(self._key, self._upload_id)
                raise StorageError(f"s3 {self._key}: a part failed; the content is as it was before this write")
            if not self._dirty:
                return
            if not self._upload_id and not self._base:
                # Everything fits one request: a plain object, no upload to track.
                self._driver._call("put_object", Key=self._key, Body=bytes(self._buffer), **self._driver.sse)
                return
            self._start_upload()
            if len(self._buffer) >= MIN_PART:
                self._send(bytes(self._buffer))
                self._buffer.clear()
            self._drain()
            metadata = {META_UPLOAD: self._upload_id, META_PARTS: str(self._next_part - 1), META_SIZE: str(self._parts_size)}
            self._driver._call("put_object", Key=self._key, Body=bytes(self._buffer), Metadata=metadata, **self._driver.sse)
        finally:
            self._drain(cancel=True)
            self._buffer = bytearray()


def _read_closing(body: Any) -> bytes:
    try:
        return cast(bytes, body.read())
    finally:
        body.close()


def _endpoint(parameters: dict[str, Any]) -> str | None:
    endpoint = str(parameters.get("regionendpoint") or "")
    if not endpoint:
        return None
    if "://" not in endpoint:
        endpoint = ("https://" if parameters.get("secure", True) else "http://") + endpoint
    return endpoint


def _client(parameters: dict[str, Any]) -> Any:
    config = botocore.config.Config(
        max_pool_connections=int(parameters.get("maxconnections", 64)),
        retries={"mode": "standard"},
        s3={"addressing_style": "path" if parameters.get("forcepathstyle") else "auto"},
        signature_version="s3v4",
        # Only the checksums S3 insists on: newer defaults add trailing checksums that several
        # S3-compatible stores refuse, and would cost a CRC pass over every part.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    credentials: dict[str, str] = {}
    if parameters.get("accesskey") and parameters.get("secretkey"):
        credentials = {"aws_access_key_id": parameters["accesskey"], "aws_secret_access_key": parameters["secretkey"]}
    with _SESSION_LOCK:
        client = _SESSION.client(
            "s3",
            region_name=parameters.get("region") or "us-east-1",
            endpoint_url=_endpoint(parameters),
            use_ssl=bool(parameters.get("secure", True)),
            # skipverify: a store whose certificate cannot be checked (self-signed, in a test
            # setup); None keeps botocore's default, which verifies.
            verify=False if parameters.get("skipverify") else None,
            config=config,
            **credentials,
        )
    client.meta.events.register("before-send.s3", _count_request)
    return client


def create_driver(parameters: dict[str, Any]) -> StorageDriver:
    return S3Driver(parameters)
