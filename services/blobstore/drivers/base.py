"""The storage driver interface: the whole of what the blobstore asks of a backend.

Modelled on the reference registry's driver: small enough that a new backend is one module.
Paths are driver paths, always absolute with ``/``-separated components of ``[A-Za-z0-9._-]``
(never ``.`` or ``..``): ``StorageDriver``'s public methods enforce that with ``check_path`` before
any backend sees a path, which is what keeps every driver inside its root.

A ``writer()`` appends to a path (and can be reopened to append more, across restarts);
``commit()`` makes what it wrote durable, ``cancel()`` discards it. Content is therefore never
promised to be whole while it is being written: the blobstore writes only under upload paths and
``move()``s verified content into place, atomically where the backend allows.

``lock()`` is the one coordination primitive: what takes several calls (a tag move, a manifest
delete and the sweep of its tags) runs under a lock that every process sharing the storage honours.
"""

from __future__ import annotations

import abc
import builtins
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

_PATH_RE = re.compile(r"(?:/[A-Za-z0-9._-]+)+")


class StorageError(Exception):
    """Base of every driver failure."""


class PathNotFound(StorageError):
    def __init__(self, path: str) -> None:
        super().__init__(f"path not found: {path}")
        self.path = path


class InvalidPath(StorageError):
    def __init__(self, path: str) -> None:
        super().__init__(f"invalid path: {path[:200]!r}")
        self.path = path


class InvalidOffset(StorageError):
    def __init__(self, path: str, offset: int) -> None:
        super().__init__(f"invalid offset {offset} for {path}")
        self.path = path
        self.offset = offset


def check_path(path: str, *, allow_root: bool = False) -> str:
    """Returns ``path`` if it is a valid driver path, raises InvalidPath otherwise."""
    if allow_root and path == "/":
        return path
    if not _PATH_RE.fullmatch(path) or any(part in (".", "..") for part in path.split("/")):
        raise InvalidPath(path)
    return path


@dataclass(frozen=True)
class FileInfo:
    path: str
    size: int
    modified: float  # seconds since the epoch
    is_dir: bool


class FileWriter(abc.ABC):
    """Appends to one path."""

    @abc.abstractmethod
    def write(self, data: bytes) -> int: ...

    @property
    @abc.abstractmethod
    def size(self) -> int:
        """Bytes in the file so far, including what an appending writer found there."""

    @abc.abstractmethod
    def commit(self) -> None:
        """Makes the content durable; the writer is closed after."""

    @abc.abstractmethod
    def cancel(self) -> None:
        """Discards everything this writer and its predecessors wrote."""

    @abc.abstractmethod
    def close(self) -> None:
        """Releases resources, keeping what was written for a later appending writer."""

    def __enter__(self) -> FileWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ThreadLocks:
    """Exclusion per name among the threads of this process. A name's lock exists only while it is
    held or awaited, so any number of names (one per repository) can pass through."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, name: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(name) or (threading.Lock(), 0)
            self._locks[name] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                users = self._locks[name][1] - 1
                if users:
                    self._locks[name] = (lock, users)
                else:
                    del self._locks[name]


class StorageDriver(abc.ABC):
    """One storage backend.

    The public methods are the interface and belong to this class: each checks its paths with
    ``check_path`` and then calls the protected method of the same name (``get_content`` calls
    ``_get_content``), which is all a backend implements. So no backend can forget the check, and
    none repeats it; a subclass that overrides a public method is refused when it is defined.
    """

    name: str = ""
    # (``builtins.list`` below: in this class, ``list`` names the method.)

    # The methods that take a driver path and check it here, for every backend.
    _CHECKED = frozenset(
        {
            "get_content",
            "put_content",
            "put_marker",
            "reader",
            "writer",
            "stat",
            "file_size",
            "list",
            "children",
            "walk",
            "move",
            "delete",
            "delete_files",
            "lock",
            "redirect_url",
            "local_file",
        }
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        overridden = sorted(cls._CHECKED & cls.__dict__.keys())
        if overridden:
            raise TypeError(
                f"{cls.__name__} overrides {', '.join(overridden)}: implement the protected "
                f"method instead (_{overridden[0]}), so the base class checks the paths first"
            )

    # The interface: paths checked, then handed to the backend

    def get_content(self, path: str) -> bytes:
        return self._get_content(check_path(path))

    def put_content(self, path: str, data: bytes) -> None:
        """Replaces the content at path atomically."""
        self._put_content(check_path(path), data)

    def put_marker(self, path: str) -> None:
        """An empty file that only has to exist, and whose loss in a crash is harmless: without
        the atomic replace and the sync of ``put_content`` where skipping them is cheaper."""
        self._put_marker(check_path(path))

    def reader(self, path: str, offset: int = 0) -> BinaryIO:
        """A file object positioned at ``offset``; the caller closes it."""
        return self._reader(check_path(path), offset)

    def writer(self, path: str, append: bool = False) -> FileWriter:
        return self._writer(check_path(path), append)

    def stat(self, path: str) -> FileInfo:
        return self._stat(check_path(path, allow_root=True))

    def file_size(self, path: str) -> int | None:
        """The size of the file at ``path``, or None when there is none (a directory counts as none).

        Existence checks on content paths need nothing more; a backend that tells a missing file
        from a directory only with a second request (S3) answers this with one.
        """
        return self._file_size(check_path(path))

    def list(self, path: str) -> list[str]:
        """Full paths of the direct children of a directory."""
        return self._list(check_path(path, allow_root=True))

    def children(self, path: str, after: str = "") -> Iterator[str]:
        """Full paths of the direct children of a directory whose names sort after ``after``, in
        sorted order, produced as they are read: a caller that stops early (a page of the catalog or
        of tags) pays for what it read, where the backend lists in order (S3). PathNotFound when
        ``path`` is no directory."""
        return self._children(check_path(path, allow_root=True), after)

    def walk(self, path: str) -> Iterator[FileInfo]:
        """Every file and directory below ``path``, parents before children, in sorted order."""
        return self._walk(check_path(path, allow_root=True))

    def move(self, source: str, dest: str) -> None:
        self._move(check_path(source), check_path(dest))

    def delete(self, path: str) -> None:
        """Deletes a file, or a directory with everything under it."""
        self._delete(check_path(path))

    def delete_files(self, paths: builtins.list[str]) -> None:
        """Deletes files (not directories), quietly skipping those already gone. Garbage
        collection sweeps with it. Every path is checked before the first is deleted."""
        self._delete_files([check_path(p) for p in paths])

    def lock(self, path: str) -> AbstractContextManager[None]:
        """Holds the lock named ``path`` (which need not exist): while it is held, no other thread of
        this or any other process sharing the storage gets the same lock. Not reentrant.

        Storage calls are atomic one by one; this is for what must be atomic as a whole. Taking a
        lock adds nothing that ``list`` or ``walk`` show, and a holder that dies does not keep it.
        """
        return self._lock(check_path(path))

    def redirect_url(self, path: str, method: str = "GET") -> str | None:
        """A URL a client may fetch the content from directly, or None."""
        return self._redirect_url(check_path(path), method)

    def local_file(self, path: str) -> str | None:
        """The content's file on this machine, for zero-copy reads (sendfile), or None when the
        backend keeps no local files."""
        return self._local_file(check_path(path))

    def purge_temporary(self, older_than: float, dryrun: bool = False) -> builtins.list[str]:
        """Removes what this backend's own writes leave behind when a process dies mid-write
        (temporary files, incomplete multipart uploads) and was last touched before
        ``older_than`` (seconds since the epoch); returns a description of each. Upload purging
        calls it. Nothing by default: a backend without such leftovers has nothing to do."""
        return []

    # What a backend implements: paths arrive checked (``/`` only where the public method allows it)

    @abc.abstractmethod
    def _get_content(self, path: str) -> bytes: ...

    @abc.abstractmethod
    def _put_content(self, path: str, data: bytes) -> None: ...

    def _put_marker(self, path: str) -> None:
        self._put_content(path, b"")

    @abc.abstractmethod
    def _reader(self, path: str, offset: int) -> BinaryIO: ...

    @abc.abstractmethod
    def _writer(self, path: str, append: bool) -> FileWriter: ...

    @abc.abstractmethod
    def _stat(self, path: str) -> FileInfo: ...

    @abc.abstractmethod
    def _list(self, path: str) -> builtins.list[str]: ...

    @abc.abstractmethod
    def _move(self, source: str, dest: str) -> None: ...

    @abc.abstractmethod
    def _delete(self, path: str) -> None: ...

    @abc.abstractmethod
    def _lock(self, path: str) -> AbstractContextManager[None]: ...

    def _file_size(self, path: str) -> int | None:
        """From ``stat``, by default."""
        try:
            info = self._stat(path)
        except PathNotFound:
            return None
        return None if info.is_dir else info.size

    def _redirect_url(self, path: str, method: str) -> str | None:
        """None by default: the content is served through the registry."""
        return None

    def _local_file(self, path: str) -> str | None:
        """None by default: the backend keeps no local files."""
        return None

    def _delete_files(self, paths: builtins.list[str]) -> None:
        """One ``delete`` per path by default; a backend that deletes many keys in one request
        (S3) overrides it."""
        for path in paths:
            try:
                self._delete(path)
            except PathNotFound:
                pass

    def _children(self, path: str, after: str) -> Iterator[str]:
        """From ``list``, by default."""
        for child in self._list(path):
            if child.rsplit("/", 1)[1] > after:
                yield child

    def _walk(self, path: str) -> Iterator[FileInfo]:
        """A ``list`` and a ``stat`` per entry, by default. The children come from the backend's
        listing, so they go through the public methods and are checked like any other path."""
        for child in sorted(self.list(path)):
            info = self.stat(child)
            yield info
            if info.is_dir:
                yield from self._walk(child)


_FACTORIES: dict[str, Callable[[dict[str, Any]], StorageDriver]] = {}


def register(name: str) -> Callable[[Callable[[dict[str, Any]], StorageDriver]], Callable[[dict[str, Any]], StorageDriver]]:
    """Class or function decorator: makes a driver constructible by name from config parameters."""

    def wrap(factory: Callable[[dict[str, Any]], StorageDriver]) -> Callable[[dict[str, Any]], StorageDriver]:
        _FACTORIES[name] = factory
        return factory

    return wrap


def create(name: str, parameters: dict[str, Any]) -> StorageDriver:
    if name not in _FACTORIES:
        raise StorageError(f"storage.driver: no driver named {name!r} (have: {', '.join(sorted(_FACTORIES))})")
    return _FACTORIES[name](parameters)
