"""Appendable writes: a path being written is a multipart upload plus a *marker*.

A registry upload arrives in chunks, each written by a fresh appending writer that may run in
another blobstore replica. S3 objects cannot be appended to, so while a path is being written it
is a multipart upload plus the marker: the object at the path itself, holding the pending tail
(under S3's 5 MiB minimum part size, so not yet a part) and, in its metadata, the upload id, the
number of parts and their total size (``Head`` reads them). The marker makes the in-progress path
visible to stat (size = parts + tail, one HeadObject), list and delete like any file, and is all
a writer in another process needs to carry on. Reading or moving an in-progress path first
``complete``s the upload into a plain object; appending to a plain object of 5 MiB or more starts
a new upload whose first part is a server-side copy of it, a smaller one is read back as the tail.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from services.blobstore.drivers.base import FileWriter, PathNotFound, StorageError
from services.blobstore.drivers.s3.bucket import (
    META_PARTS,
    META_SIZE,
    META_UPLOAD,
    Bucket,
    Head,
    Missing,
    read_closing,
)

MiB = 1 << 20
# S3's limits: parts other than the last, part numbers, one CopyObject/UploadPartCopy source range.
MIN_PART = 5 * MiB
MAX_PARTS = 10_000
MAX_COPY_PART = 5 << 30


def abort(bucket: Bucket, key: str, upload_id: str) -> None:
    """Aborts one upload, quietly if it is gone already."""
    try:
        bucket.call("abort_multipart_upload", Key=key, UploadId=upload_id)
    except Missing:
        pass  # already completed or aborted


def abort_uploads(bucket: Bucket, prefix: str, exact: str | None = None) -> None:
    """Aborts every multipart upload under ``prefix`` (only the key ``exact``, if given)."""
    for page in bucket.pages("list_multipart_uploads", Prefix=prefix):
        for upload in page.get("Uploads", ()):
            if exact is None or upload["Key"] == exact:
                abort(bucket, upload["Key"], upload["UploadId"])


def complete(bucket: Bucket, path: str, key: str, head: Head, tail: bytes | None = None) -> Head:
    """Turns a marker and its upload into the plain object; returns what the object is now."""
    try:
        return _complete_upload(bucket, key, head, tail)
    except Missing:
        # Completed meanwhile (by another reader or replica): the object is whole now.
        found = bucket.head(key)
        if found is None:  # cancelled or deleted meanwhile
            raise PathNotFound(path) from None
        if found.upload_id:
            raise StorageError(f"s3 {key}: upload vanished while completing it") from None
        return found


def _complete_upload(bucket: Bucket, key: str, head: Head, tail: bytes | None) -> Head:
    if tail is None:
        tail = read_closing(bucket.call("get_object", Key=key)["Body"]) if head.length else b""
    parts = []
    for page in bucket.pages("list_parts", Key=key, UploadId=head.upload_id):
        # Parts past the marker's count are from a writer that failed before its marker.
        parts += [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in page.get("Parts", ()) if p["PartNumber"] <= head.parts]
    if tail:
        reply = bucket.call("upload_part", Key=key, UploadId=head.upload_id, PartNumber=head.parts + 1, Body=tail)
        parts.append({"PartNumber": head.parts + 1, "ETag": reply["ETag"]})
    if len(parts) != head.parts + (1 if tail else 0):
        raise StorageError(f"s3 {key}: the upload lacks parts its marker counts")
    parts.sort(key=lambda p: p["PartNumber"])
    reply = bucket.call("complete_multipart_upload", Key=key, UploadId=head.upload_id, MultipartUpload={"Parts": parts})
    return Head(head.size, head.modified, reply.get("ETag", ""), {})


class Writer(FileWriter):
    """Appends to one key: full parts go out as they fill (``concurrency`` at a time), the rest
    waits in memory and, at commit, becomes the marker's tail (or a plain object when small)."""

    def __init__(
        self,
        bucket: Bucket,
        key: str,
        chunksize: int,
        concurrency: int,
        *,
        head: Head | None = None,
        tail: bytes = b"",
        copy_base: bool = False,
    ) -> None:
        self._bucket = bucket
        self._key = key
        self._chunksize = chunksize
        self._concurrency = concurrency
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
            size = self._chunksize
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
            abort(self._bucket, self._key, self._upload_id)
        # Predecessors' uploads too, and any a crashed writer left without a marker.
        abort_uploads(self._bucket, self._key, exact=self._key)
        self._bucket.call("delete_object", Key=self._key)

    # Parts

    def _start_upload(self) -> None:
        if not self._upload_id:
            reply = self._bucket.call("create_multipart_upload", Key=self._key, **self._bucket.sse)
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
            self._bucket.call(
                "upload_part_copy",
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=self._claim_part(),
                CopySource={"Bucket": self._bucket.name, "Key": self._key},
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
        while len(self._inflight) >= self._concurrency:
            try:
                self._inflight.popleft().result()
            except BaseException:
                self._failed = True
                raise
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._concurrency, thread_name_prefix="s3-part")
        self._inflight.append(
            self._pool.submit(self._bucket.call, "upload_part", Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=part)
        )
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
                    abort(self._bucket, self._key, self._upload_id)
                raise StorageError(f"s3 {self._key}: a part failed; the content is as it was before this write")
            if not self._dirty:
                return
            if not self._upload_id and not self._base:
                # Everything fits one request: a plain object, no upload to track.
                self._bucket.call("put_object", Key=self._key, Body=bytes(self._buffer), **self._bucket.sse)
                return
            self._start_upload()
            if len(self._buffer) >= MIN_PART:
                self._send(bytes(self._buffer))
                self._buffer.clear()
            self._drain()
            metadata = {META_UPLOAD: self._upload_id, META_PARTS: str(self._next_part - 1), META_SIZE: str(self._parts_size)}
            self._bucket.call("put_object", Key=self._key, Body=bytes(self._buffer), Metadata=metadata, **self._bucket.sse)
        finally:
            self._drain(cancel=True)
            self._buffer = bytearray()
