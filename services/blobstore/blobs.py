"""Blobs as a repository sees them: content-addressed data shared by all repositories, readable
by a repository only through a link that a push or a mount put there."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from cachetools import LRUCache

from services.blobstore import layout
from services.blobstore.drivers import InvalidOffset, PathNotFound, StorageDriver
from services.common.errors import BLOB_UNKNOWN, RANGE_INVALID, RegistryError


@dataclass(frozen=True)
class BlobInfo:
    digest: str
    size: int


# Sizes of blob data remembered per process: content-addressed data never changes size. Garbage
# collection deletes data only after the links to it, and only ``stat`` (behind a link check)
# trusts this memo; whether content exists at all is asked of the store. Gateway requests reach
# it from several gRPC threads at once, and an LRUCache is not thread-safe: hence the lock.
_SIZES_MAX = 65536


class Blobs:
    def __init__(self, driver: StorageDriver) -> None:
        self.driver = driver
        self._sizes: LRUCache[str, int] = LRUCache(maxsize=_SIZES_MAX)
        self._sizes_lock = threading.Lock()

    def stat(self, repository: str, digest: str) -> BlobInfo:
        """The blob's size, if the repository may read it: the link is always checked (links
        come and go), the data's size once per process."""
        if self.driver.file_size(layout.layer_link(repository, digest)) is not None:
            found = self.stat_global(digest)
            if found is not None:
                return found
        raise RegistryError(BLOB_UNKNOWN, {"digest": digest})

    def stat_global(self, digest: str) -> BlobInfo | None:
        with self._sizes_lock:
            size = self._sizes.get(digest)
            if size is not None:
                return BlobInfo(digest, size)
        size = self.driver.file_size(layout.blob_data(digest))
        if size is None:
            return None  # absence is not remembered: the blob may be pushed any moment
        self.stored(digest, size)
        return BlobInfo(digest, size)

    def stored(self, digest: str, size: int) -> None:
        """Notes that verified data of ``size`` bytes now lies at the digest's path."""
        with self._sizes_lock:
            self._sizes[digest] = size

    def read(self, repository: str, digest: str, offset: int, length: int, chunk_size: int) -> tuple[int, Iterator[bytes]]:
        """Total size and a stream of ``length`` bytes from ``offset`` (0 = to the end).

        Fails before the first chunk if the blob is unknown or the range cannot be satisfied, so
        the caller can still answer with an error status.
        """
        size = self.stat(repository, digest).size
        if offset < 0 or length < 0 or (offset >= size and not (offset == 0 and size == 0)):
            raise RegistryError(RANGE_INVALID, {"size": size})
        end = size if length == 0 else min(size, offset + length)
        try:
            reader = self.driver.reader(layout.blob_data(digest), offset)
        except (PathNotFound, InvalidOffset):
            raise RegistryError(BLOB_UNKNOWN, {"digest": digest}) from None
        return size, _stream(reader, end - offset, chunk_size)

    def link(self, repository: str, digest: str) -> None:
        self.driver.put_content(layout.layer_link(repository, digest), digest.encode())

    def mount(self, repository: str, digest: str, from_repository: str) -> BlobInfo:
        """Links a blob from another repository (or, without one, from anywhere in the store)."""
        if from_repository:
            info = self.stat(from_repository, digest)
        else:
            size = self.driver.file_size(layout.blob_data(digest))  # not the memo: GC may have run
            if size is None:
                raise RegistryError(BLOB_UNKNOWN, {"digest": digest})
            info = BlobInfo(digest, size)
        self.link(repository, digest)
        return info

    def content(self, info: BlobInfo) -> bytes:
        """The whole blob (one ``stat`` found and its caller checked): for small ones only."""
        try:
            return self.driver.get_content(layout.blob_data(info.digest))
        except PathNotFound:
            raise RegistryError(BLOB_UNKNOWN, {"digest": info.digest}) from None

    def url(self, digest: str, method: str) -> str | None:
        """The storage driver's URL for the blob's data (a presigned one), None when it has none;
        the caller has checked the repository's link (``stat``)."""
        return self.driver.redirect_url(layout.blob_data(digest), method)

    def delete(self, repository: str, digest: str) -> None:
        """Unlinks the blob from the repository; the bytes stay for other repositories (and GC)."""
        try:
            self.driver.delete(layout.layer_link_dir(repository, digest))
        except PathNotFound:
            raise RegistryError(BLOB_UNKNOWN, {"digest": digest}) from None

    def missing(self, repository: str, wanted: list[str]) -> list[str]:
        """Those of ``wanted`` that the repository cannot read."""
        return [d for d in dict.fromkeys(wanted) if self.driver.file_size(layout.layer_link(repository, d)) is None]


def _stream(reader: BinaryIO, remaining: int, chunk_size: int) -> Iterator[bytes]:
    with reader:
        while remaining > 0:
            chunk = reader.read(min(chunk_size, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk
