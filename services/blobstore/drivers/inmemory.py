"""In-memory driver: for tests and throwaway registries; everything is gone on exit."""

from __future__ import annotations

import io
import threading
import time
from contextlib import AbstractContextManager
from typing import Any, BinaryIO

from services.blobstore.drivers.base import (
    FileInfo,
    FileWriter,
    InvalidOffset,
    PathNotFound,
    StorageDriver,
    ThreadLocks,
    register,
)


class _Writer(FileWriter):
    def __init__(self, driver: InMemoryDriver, path: str, append: bool) -> None:
        self._driver = driver
        self._path = path
        with driver._guard:
            existing = driver._files.get(path) if append else None
            self._buffer = bytearray(existing[0] if existing else b"")
            driver._files[path] = (bytes(self._buffer), time.time())
        self._closed = False

    def write(self, data: bytes) -> int:
        self._buffer += data
        return len(data)

    @property
    def size(self) -> int:
        return len(self._buffer)

    def commit(self) -> None:
        self.close()

    def cancel(self) -> None:
        self._closed = True
        with self._driver._guard:
            self._driver._files.pop(self._path, None)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with self._driver._guard:
                self._driver._files[self._path] = (bytes(self._buffer), time.time())


class InMemoryDriver(StorageDriver):
    name = "inmemory"

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._files: dict[str, tuple[bytes, float]] = {}
        self._thread_locks = ThreadLocks()

    def _is_dir(self, path: str) -> bool:
        prefix = "/" if path == "/" else path + "/"
        return any(p.startswith(prefix) for p in self._files)

    def _get_content(self, path: str) -> bytes:
        with self._guard:
            if path not in self._files:
                raise PathNotFound(path)
            return self._files[path][0]

    def _put_content(self, path: str, data: bytes) -> None:
        with self._guard:
            self._files[path] = (bytes(data), time.time())

    def _reader(self, path: str, offset: int) -> BinaryIO:
        data = self._get_content(path)
        if offset < 0 or offset > len(data):
            raise InvalidOffset(path, offset)
        stream = io.BytesIO(data)
        stream.seek(offset)
        return stream

    def _writer(self, path: str, append: bool) -> FileWriter:
        return _Writer(self, path, append)

    def _stat(self, path: str) -> FileInfo:
        with self._guard:
            if path in self._files:
                data, modified = self._files[path]
                return FileInfo(path, len(data), modified, False)
            if path == "/" or self._is_dir(path):
                return FileInfo(path, 0, time.time(), True)
        raise PathNotFound(path)

    def _list(self, path: str) -> list[str]:
        prefix = "/" if path == "/" else path + "/"
        with self._guard:
            children = {prefix + p[len(prefix) :].split("/", 1)[0] for p in self._files if p.startswith(prefix)}
        if not children and path != "/":
            raise PathNotFound(path)
        return sorted(children)

    def _move(self, source: str, dest: str) -> None:
        with self._guard:
            if source not in self._files:
                raise PathNotFound(source)
            self._files[dest] = self._files.pop(source)

    def _delete(self, path: str) -> None:
        prefix = path + "/"
        with self._guard:
            doomed = [p for p in self._files if p == path or p.startswith(prefix)]
            if not doomed:
                raise PathNotFound(path)
            for p in doomed:
                del self._files[p]

    def _lock(self, path: str) -> AbstractContextManager[None]:
        """Thread locks are all it takes: no other process can see this storage."""
        return self._thread_locks.hold(path)


@register("inmemory")
def _create(parameters: dict[str, Any]) -> StorageDriver:
    return InMemoryDriver()
