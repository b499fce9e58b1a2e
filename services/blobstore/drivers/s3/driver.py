"""The S3 driver: Amazon S3 and S3-compatible stores (MinIO, Ceph, moto), through boto3.

A driver path is a key under ``rootdirectory``; directories are key prefixes, so they exist while
something lies below them. Every request is counted in STORAGE_CALLS; the aim is one request per
plain operation (a file's stat is one HeadObject, a directory's only costs a listing after that
misses). Paths being written are markers (multipart.py), locks are objects (locks.py).
"""

from __future__ import annotations

import hashlib
import heapq
import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO, cast

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
)
from services.blobstore.drivers.s3.bucket import (
    BadRange,
    Bucket,
    Head,
    Missing,
    read_closing,
    translate,
)
from services.blobstore.drivers.s3.client import make_client
from services.blobstore.drivers.s3.locks import LOCKS, held
from services.blobstore.drivers.s3.multipart import (
    MIN_PART,
    MiB,
    Writer,
    abort,
    abort_uploads,
    complete,
)

# Keys per DeleteObjects request (S3's limit).
DELETE_BATCH = 1000

_NAME_RE = re.compile(r"[A-Za-z0-9._-]+")


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
        self.client = make_client(parameters)
        self._objects = Bucket(self.client, self.bucket, self.sse)
        self._thread_locks = ThreadLocks()

    # Keys

    def _key(self, path: str) -> str:
        return f"{self.prefix}/{path[1:]}" if self.prefix else path[1:]

    def _dir_prefix(self, path: str) -> str:
        """The prefix every key below the directory ``path`` starts with."""
        if path == "/":
            return f"{self.prefix}/" if self.prefix else ""
        return self._key(path) + "/"

    # Reading

    def _get_content(self, path: str) -> bytes:
        key = self._key(path)
        for _ in range(3):
            head, body = self._get(path, key)
            data = read_closing(body)
            if not head.upload_id:
                return data
            complete(self._objects, path, key, head, data)
        raise StorageError(f"{path}: still being written after completing it")

    def _reader(self, path: str, offset: int) -> BinaryIO:
        if offset < 0:
            raise InvalidOffset(path, offset)
        key = self._key(path)
        for _ in range(3):
            try:
                head, body = self._get(path, key, offset)
            except BadRange:
                # Only an offset at or past the end gets here: at the end is an empty read.
                found = self._objects.head(key)
                if found is None:
                    raise PathNotFound(path) from None
                if found.upload_id:
                    complete(self._objects, path, key, found)
                    continue
                if offset == found.size:
                    return io.BytesIO(b"")
                raise InvalidOffset(path, offset) from None
            if not head.upload_id:
                return cast(BinaryIO, body)
            tail = read_closing(body) if offset == 0 else None
            if tail is None:
                body.close()
            complete(self._objects, path, key, head, tail)
        raise StorageError(f"{path}: still being written after completing it")

    def _get(self, path: str, key: str, offset: int = 0) -> tuple[Head, Any]:
        params: dict[str, Any] = {"Key": key}
        if offset:
            params["Range"] = f"bytes={offset}-"
        try:
            response = self._objects.call("get_object", **params)
        except Missing:
            raise PathNotFound(path) from None
        return Head.of(response), response["Body"]

    def _stat(self, path: str) -> FileInfo:
        if path != "/":
            head = self._objects.head(self._key(path))
            if head is not None:
                return FileInfo(path, head.size, head.modified, False)
        # Not a file: a directory if any key lies below it (the root always is one).
        page = self._objects.call("list_objects_v2", Prefix=self._dir_prefix(path), MaxKeys=1)
        if page.get("KeyCount", 0):
            return FileInfo(path, 0, page["Contents"][0]["LastModified"].timestamp(), True)
        if path == "/":
            return FileInfo(path, 0, 0.0, True)
        raise PathNotFound(path)

    def _file_size(self, path: str) -> int | None:
        head = self._objects.head(self._key(path))
        return None if head is None else head.size

    def _list(self, path: str) -> list[str]:
        prefix = self._dir_prefix(path)
        base = "" if path == "/" else path
        names: set[str] = set()
        for page in self._objects.pages("list_objects_v2", Prefix=prefix, Delimiter="/"):
            names.update(item["Key"][len(prefix) :] for item in page.get("Contents", ()))
            names.update(item["Prefix"][len(prefix) : -1] for item in page.get("CommonPrefixes", ()))
        children = sorted(f"{base}/{name}" for name in names if _NAME_RE.fullmatch(name) and name not in (".", ".."))
        if not children and path != "/":
            raise PathNotFound(path)
        return children

    def _children(self, path: str, after: str) -> Iterator[str]:
        """ListObjectsV2 with Delimiter and StartAfter, a page at a time, so a caller that stops
        early reads only the pages it needed.

        S3 orders a folder ``a/`` by its key, after ``a-b/`` and ``a.b/``, where the name ``a``
        sorts first; so a name is handed out only once no later key can hold a smaller one."""
        prefix = self._dir_prefix(path)
        base = "" if path == "/" else path
        params: dict[str, Any] = {"Prefix": prefix, "Delimiter": "/", "MaxKeys": self.children_page}
        if after:
            params["StartAfter"] = prefix + after
        pending: list[str] = []
        emitted = after
        found = False
        for page in self._objects.pages("list_objects_v2", **params):
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
        if not found and path != "/" and not (after and self._stat(path).is_dir):
            raise PathNotFound(path)

    def _walk(self, path: str) -> Iterator[FileInfo]:
        """One listing of everything below ``path`` rather than a stat per entry. Sizes come from
        the listing, so a file still being written shows its pending tail only."""
        prefix = self._dir_prefix(path)
        base = "" if path == "/" else path
        files: dict[str, FileInfo] = {}
        dirs: dict[str, float] = {}
        for page in self._objects.pages("list_objects_v2", Prefix=prefix):
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

    def _redirect_url(self, path: str, method: str) -> str | None:
        operation = {"GET": "get_object", "HEAD": "head_object"}.get(method.upper())
        if operation is None:
            return None
        # Signed locally: no request to the store.
        return cast(
            str,
            self.client.generate_presigned_url(
                operation, Params={"Bucket": self.bucket, "Key": self._key(path)}, ExpiresIn=self.redirect_expiry
            ),
        )

    # Writing

    def _put_content(self, path: str, data: bytes) -> None:
        self._objects.call("put_object", Key=self._key(path), Body=data, **self.sse)

    def _writer(self, path: str, append: bool) -> FileWriter:
        key = self._key(path)
        if not append:
            return Writer(self._objects, key, self.chunksize, self.concurrency)
        try:
            response = self._objects.call("get_object", Key=key)
        except Missing:
            return Writer(self._objects, key, self.chunksize, self.concurrency)
        head, body = Head.of(response), response["Body"]
        if head.upload_id or head.length < MIN_PART:
            return Writer(self._objects, key, self.chunksize, self.concurrency, head=head, tail=read_closing(body))
        body.close()  # large enough to become the first part by a server-side copy
        return Writer(self._objects, key, self.chunksize, self.concurrency, head=head, copy_base=True)

    def _move(self, source: str, dest: str) -> None:
        src, dst = self._key(source), self._key(dest)
        head = self._objects.head(src)
        if head is None:
            raise PathNotFound(source)
        if head.upload_id:
            head = complete(self._objects, source, src, head)
        if src == dst:
            return
        extra = dict(self.sse)
        if head.size < self.copy_config.multipart_threshold:
            # One CopyObject: no transfer manager (and its thread pool) for the common case.
            self._objects.call("copy_object", Key=dst, CopySource={"Bucket": self.bucket, "Key": src}, CopySourceIfMatch=head.etag, **extra)
            self._objects.call("delete_object", Key=src)
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
            raise translate("copy", exc) from exc
        self._objects.call("delete_object", Key=src)

    def _delete(self, path: str) -> None:
        prefix = self._dir_prefix(path)
        keys = [item["Key"] for page in self._objects.pages("list_objects_v2", Prefix=prefix) for item in page.get("Contents", ())]
        if keys:
            # Uploads first: a marker deleted before its upload would leave the parts unfindable.
            abort_uploads(self._objects, prefix)
            self._delete_keys(keys)
            return
        key = self._key(path)
        head = self._objects.head(key)
        if head is None:
            raise PathNotFound(path)
        if head.upload_id:
            abort(self._objects, key, head.upload_id)
        self._objects.call("delete_object", Key=key)

    def _delete_files(self, paths: list[str]) -> None:
        """DeleteObjects, up to 1000 keys a request; only for plain files (no marker of a
        file being written: blobs and links are never appended to)."""
        self._delete_keys([self._key(p) for p in paths])

    def _delete_keys(self, keys: list[str]) -> None:
        """DeleteObjects, DELETE_BATCH keys a request; the first key S3 could not delete fails it."""
        for start in range(0, len(keys), DELETE_BATCH):
            batch = [{"Key": k} for k in keys[start : start + DELETE_BATCH]]
            reply = self._objects.call("delete_objects", Delete={"Objects": batch, "Quiet": True})
            if reply.get("Errors"):
                first = reply["Errors"][0]
                raise StorageError(f"s3 delete_objects: {first.get('Code')} on {first.get('Key')}")

    def purge_temporary(self, older_than: float, dryrun: bool = False) -> list[str]:
        """Incomplete multipart uploads under the root started before ``older_than``: what a
        multipart copy that died leaves (billed storage, invisible to listings), or a whole blob's
        staging file (``_uploads/<uuid>.data``) whose writer died. Uploads below an upload
        session's folder are left to the session's own purge, which goes by its start time (and
        aborts them with the folder): a store's Initiated date is not always to be trusted (moto
        reports a fixed one), a session's is."""
        found = []
        for page in self._objects.pages("list_multipart_uploads", Prefix=self._dir_prefix("/")):
            for upload in page.get("Uploads", ()):
                # (A staging file is no session: layout.upload_staging.)
                in_session = "/_uploads/" in upload["Key"] and not upload["Key"].endswith(".data")
                if in_session or upload["Initiated"].timestamp() >= older_than:
                    continue
                if not dryrun:
                    abort(self._objects, upload["Key"], upload["UploadId"])
                found.append(f"multipart upload {upload['UploadId']} of {upload['Key']}")
        return found

    # Locks

    @contextmanager
    def _lock(self, path: str) -> Iterator[None]:
        """The lock object's key is named by the path's hash. Threads of this process queue on a
        thread lock first, so only one of them at a time polls the store."""
        key = f"{self._dir_prefix('/')}{LOCKS}/{hashlib.sha256(path.encode()).hexdigest()}"
        with self._thread_locks.hold(path), held(self._objects, key):
            yield


def create_driver(parameters: dict[str, Any]) -> StorageDriver:
    return S3Driver(parameters)
