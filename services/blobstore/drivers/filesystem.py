"""Filesystem driver: one directory tree under ``rootdirectory``."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from services.blobstore.drivers.base import (
    FileInfo,
    FileWriter,
    InvalidOffset,
    InvalidPath,
    PathNotFound,
    StorageDriver,
    ThreadLocks,
    register,
)

# Directories known to resolve inside the root; cleared wholesale when full.
_CLEAN_DIRS_MAX = 65536

# Temporary files of put_content; never listed. The "~" makes them impossible driver paths, so no
# real entry can be mistaken for one.
_TMP_PREFIX = ".berth-tmp~"

# Attempts of a write or delete that a concurrent delete or write of the same folder disturbed.
_RACE_RETRIES = 10

T = TypeVar("T")

# The lock files of lock(), directly under the root; never listed either.
_LOCKS_DIR = ".berth-locks~"


class _FileWriter(FileWriter):
    def __init__(self, full: Path, append: bool) -> None:
        self._file = _in_folder(full, lambda: open(full, "ab" if append else "wb"))  # noqa: SIM115 - closed by close()
        self._full = full
        self._size = self._file.tell()

    def write(self, data: bytes) -> int:
        self._file.write(data)
        self._size += len(data)
        return len(data)

    @property
    def size(self) -> int:
        return self._size

    def commit(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def cancel(self) -> None:
        self._file.close()
        self._full.unlink(missing_ok=True)

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            self._file.close()


class FilesystemDriver(StorageDriver):
    name = "filesystem"

    def __init__(self, rootdirectory: str | os.PathLike[str]) -> None:
        self.root = Path(rootdirectory).resolve()
        self._root_str = str(self.root)
        self._clean_dirs: set[str] = set()
        self._thread_locks = ThreadLocks()
        self.root.mkdir(parents=True, exist_ok=True)

    def _full(self, path: str) -> Path:
        """Where a (checked) driver path lies on disk, refused if a symlink takes it out of the root."""
        if path == "/":
            return self.root
        full = self.root / path.lstrip("/")
        # The base class's grammar check already rules out "..": what is left to refuse, as
        # defence in depth, is a symlink planted inside the root. Resolving every path costs a
        # syscall per component (most of a manifest GET), so directories found clean are
        # remembered and only the last component is checked.
        parent = os.path.dirname(full)
        if parent not in self._clean_dirs:
            self._check_directory(parent, path)
            self._remember(parent)
        if os.path.islink(full):
            self._check_inside(full, path)
        return full

    def _check_directory(self, directory: str, path: str) -> None:
        """Refuses a directory that symlinks take out of the root. Its nearest existing ancestor
        (itself, mostly) is resolved by the kernel, in three calls rather than one per component;
        below it nothing exists yet but, perhaps, dangling symlinks."""
        existing = directory
        while True:
            try:
                fd = os.open(existing, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                break
            except (FileNotFoundError, NotADirectoryError):  # not there (yet), or a file in the way
                if os.path.islink(existing):  # a dangling symlink: where would it make things?
                    self._check_inside(Path(existing), path)
                existing = os.path.dirname(existing)
        try:
            resolved = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # no /proc: resolve component by component
            resolved = str(Path(existing).resolve())
        finally:
            os.close(fd)
        if resolved != self._root_str and not resolved.startswith(self._root_str + os.sep):
            raise InvalidPath(path)

    def _check_inside(self, full: Path, path: str) -> None:
        resolved = full.resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise InvalidPath(path)

    def _remember(self, directory: str) -> None:
        if len(self._clean_dirs) >= _CLEAN_DIRS_MAX:
            self._clean_dirs.clear()
        self._clean_dirs.add(directory)

    def _local_file(self, path: str) -> str | None:
        return str(self._full(path))

    def _get_content(self, path: str) -> bytes:
        full = self._full(path)
        try:
            return full.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise PathNotFound(path) from None

    def _put_content(self, path: str, data: bytes) -> None:
        full = self._full(path)

        def replace() -> None:
            tmp = full.with_name(f"{_TMP_PREFIX}{uuid.uuid4().hex}")
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, full)
            finally:
                tmp.unlink(missing_ok=True)

        _in_folder(full, replace)

    def _put_marker(self, path: str) -> None:
        full = self._full(path)
        _in_folder(full, lambda: os.close(os.open(full, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)))

    def _reader(self, path: str, offset: int) -> BinaryIO:
        full = self._full(path)
        try:
            f = open(full, "rb")  # noqa: SIM115 - the caller closes it
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise PathNotFound(path) from None
        size = os.fstat(f.fileno()).st_size
        if offset < 0 or offset > size:
            f.close()
            raise InvalidOffset(path, offset)
        f.seek(offset)
        return f

    def _writer(self, path: str, append: bool) -> FileWriter:
        return _FileWriter(self._full(path), append)

    def _stat(self, path: str) -> FileInfo:
        full = self._full(path)
        try:
            st = full.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFound(path) from None
        is_dir = full.is_dir()
        return FileInfo(path, 0 if is_dir else st.st_size, st.st_mtime, is_dir)

    def _list(self, path: str) -> list[str]:
        full = self._full(path)
        base = "" if path == "/" else path
        try:
            with os.scandir(full) as entries:
                return sorted(f"{base}/{e.name}" for e in entries if not e.name.startswith((_TMP_PREFIX, _LOCKS_DIR)))
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFound(path) from None

    def _children(self, path: str, after: str) -> Iterator[str]:
        """One scandir, filtered before sorting (a later page sorts only what follows ``after``)."""
        full = self._full(path)
        base = "" if path == "/" else path
        try:
            with os.scandir(full) as entries:
                names = [e.name for e in entries if e.name > after and not e.name.startswith((_TMP_PREFIX, _LOCKS_DIR))]
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFound(path) from None
        names.sort()
        return iter([f"{base}/{name}" for name in names])

    def _move(self, source: str, dest: str) -> None:
        src, dst = self._full(source), self._full(dest)
        for _ in range(_RACE_RETRIES):
            if not os.path.lexists(src):
                raise PathNotFound(source)
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(src, dst)
                break
            except FileNotFoundError:
                continue  # the source went (PathNotFound above), or a concurrent delete took dst's folder
        else:
            raise PathNotFound(source)
        _fsync_dir(dst.parent)

    def _delete(self, path: str) -> None:
        full = self._full(path)
        for attempt in range(_RACE_RETRIES):
            try:
                if full.is_dir() and not full.is_symlink():
                    shutil.rmtree(full)
                else:
                    full.unlink()
                return
            except (FileNotFoundError, NotADirectoryError):
                raise PathNotFound(path) from None
            except OSError as exc:
                # A file written into the folder while rmtree emptied it (ENOTEMPTY), or the folder
                # made again between the check and the unlink (EISDIR): look again.
                if exc.errno not in (errno.ENOTEMPTY, errno.EISDIR) or attempt == _RACE_RETRIES - 1:
                    raise

    def _delete_files(self, paths: list[str]) -> None:
        """Unlinks each file and then its folder if that is left empty (a blob's or a link's own
        folder), as registry:2's garbage collector leaves no empty blob folders behind."""
        for path in paths:
            full = self._full(path)
            try:
                full.unlink()
            except (FileNotFoundError, NotADirectoryError):
                continue
            try:
                full.parent.rmdir()
            except OSError:
                pass  # not empty (or gone)

    def purge_temporary(self, older_than: float, dryrun: bool = False) -> list[str]:
        """put_content's temporary files (``.berth-tmp~*``) that a killed process left."""
        found = []
        for directory, dirs, files in os.walk(self.root):
            if directory == str(self.root):
                dirs[:] = [d for d in dirs if d != _LOCKS_DIR]
            for name in files:
                if not name.startswith(_TMP_PREFIX):
                    continue
                full = os.path.join(directory, name)
                try:
                    if os.lstat(full).st_mtime >= older_than:
                        continue
                    if not dryrun:
                        os.unlink(full)
                except FileNotFoundError:
                    continue
                found.append("/" + os.path.relpath(full, self.root))
        return found

    @contextmanager
    def _lock(self, path: str) -> Iterator[None]:
        """flock(2) on a lock file named by the path's hash. The kernel drops it when its holder's
        process dies, so a crash leaves no stale lock; on NFS it becomes a lock of the server's
        lock manager, held per process, hence the thread locks around it.

        Lock files are never deleted: one unlinked while another process waits on it would let a
        third process lock a new file of the same name, and both would hold the lock.
        """
        with self._thread_locks.hold(path):
            directory = self.root / _LOCKS_DIR
            directory.mkdir(exist_ok=True)
            name = hashlib.sha256(path.encode()).hexdigest()
            fd = os.open(directory / name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the flock


def _in_folder(full: Path, create: Callable[[], T]) -> T:
    """Makes ``full``'s folder and runs ``create`` (which makes ``full``) in it; again when a
    concurrent delete of an emptied folder (garbage collection) took the folder between the two,
    or during the mkdir itself."""
    for attempt in range(_RACE_RETRIES):
        try:
            full.parent.mkdir(parents=True, exist_ok=True)
            return create()
        except (FileNotFoundError, FileExistsError):
            if attempt == _RACE_RETRIES - 1:
                raise
    raise AssertionError("unreachable")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@register("filesystem")
def _create(parameters: dict[str, Any]) -> StorageDriver:
    return FilesystemDriver(parameters.get("rootdirectory", "./data/registry"))
