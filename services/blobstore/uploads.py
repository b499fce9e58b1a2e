"""Upload sessions: where uploads are written, verified and moved into place.

An upload's bytes live under the repository's ``_uploads/<id>/data`` until the client names the
digest. Then the content is hashed and compared, and only verified content is moved to its
content-addressed path, atomically; a mismatch removes the session and stores nothing. A reader
can therefore never see a partial or unverified blob.

Hashing happens while bytes stream in, with the algorithm the client announced (its
``digest-algorithm``, or the digest of a write that also commits), else sha256, the digest nearly
every client uses. The running hash lives in this process; when a session moved here from another
replica or survived a restart, or the commit names another algorithm, the hash is rebuilt from the
stored bytes at commit, so correctness never depends on which blobstore received which chunk.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cachetools import LRUCache

from services.blobstore import layout
from services.blobstore.blobs import BlobInfo, Blobs
from services.blobstore.drivers import PathNotFound, StorageDriver
from services.common import digests
from services.common.errors import (
    BLOB_UPLOAD_UNKNOWN,
    DIGEST_INVALID,
    RANGE_INVALID,
    SIZE_INVALID,
    RegistryError,
)
from services.common.metrics import UPLOAD_DURATION

# Sessions with per-process state kept at once; the least recently used is forgotten (its hash is
# rebuilt from the stored bytes at commit if it comes back).
_MAX_SESSIONS = 4096
_REHASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class UploadInfo:
    upload_id: str
    size: int
    started_at: int
    digest: str = ""


@dataclass
class _Session:
    """Per-process state of one upload: a lock and the running hash, if it covers every byte."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    hasher: Any = None
    hashed: int = 0
    # When the session started, if it started in this process (else read from storage when needed).
    started_at: int = 0


class Uploads:
    def __init__(self, driver: StorageDriver, blobs: Blobs) -> None:
        self.driver = driver
        self.blobs = blobs
        self._sessions: LRUCache[str, _Session] = LRUCache(maxsize=_MAX_SESSIONS)
        self._sessions_lock = threading.Lock()  # an LRUCache is not thread-safe

    def _session(self, upload_id: str) -> _Session:
        with self._sessions_lock:
            session = self._sessions.get(upload_id)
            if session is None:
                session = self._sessions[upload_id] = _Session()
            return session

    def _forget(self, upload_id: str) -> None:
        with self._sessions_lock:
            self._sessions.pop(upload_id, None)

    def start(self, repository: str, algorithm: str = digests.CANONICAL) -> UploadInfo:
        """A new session, its bytes hashed with ``algorithm`` as they arrive (DIGEST_INVALID if unsupported)."""
        session_hasher = digests.hasher(algorithm)
        upload_id = str(uuid.uuid4())
        started = int(time.time())
        self.driver.put_content(layout.upload_started_at(repository, upload_id), str(started).encode())
        self.driver.writer(layout.upload_data(repository, upload_id)).commit()
        session = self._session(upload_id)
        session.hasher = session_hasher
        session.started_at = started
        return UploadInfo(upload_id, 0, started)

    def status(self, repository: str, upload_id: str) -> UploadInfo:
        try:
            started = int(self.driver.get_content(layout.upload_started_at(repository, upload_id)) or 0)
            size = self.driver.stat(layout.upload_data(repository, upload_id)).size
        except (PathNotFound, ValueError):
            raise RegistryError(BLOB_UPLOAD_UNKNOWN, {"upload": upload_id}) from None
        return UploadInfo(upload_id, size, started)

    def _size(self, repository: str, upload_id: str) -> int:
        """Bytes received so far: one request, where ``status`` needs two (writes and commits, the
        hot path, do not need the start time)."""
        size = self.driver.file_size(layout.upload_data(repository, upload_id))
        if size is None:
            raise RegistryError(BLOB_UPLOAD_UNKNOWN, {"upload": upload_id})
        return size

    def write(
        self,
        repository: str,
        upload_id: str,
        offset: int,
        data: Iterable[bytes],
        expected_length: int = -1,
        algorithm: str = digests.CANONICAL,
    ) -> UploadInfo:
        """Appends ``data`` at ``offset``, which must be where the upload ends now (negative: anywhere).

        ``algorithm`` hashes an upload that is still empty (the client's latest word on it); bytes
        already received keep the running hash they have, if any.
        The answer's ``started_at`` is 0 unless the session started in this process.
        """
        session = self._session(upload_id)
        with session.lock:
            current = self._size(repository, upload_id)
            if offset >= 0 and offset != current:
                raise RegistryError(RANGE_INVALID, {"size": current, "offset": offset})
            if current == 0:
                session.hasher, session.hashed = digests.hasher(algorithm), 0
            elif session.hashed != current:
                # The bytes so far were hashed elsewhere (or not at all): hash at commit instead.
                session.hasher, session.hashed = None, 0
            received = 0
            writer = self.driver.writer(layout.upload_data(repository, upload_id), append=True)
            try:
                for chunk in data:
                    writer.write(chunk)
                    received += len(chunk)
                    if session.hasher is not None:
                        session.hasher.update(chunk)
            finally:
                writer.commit()
                if session.hasher is not None:
                    session.hashed = current + received
            if expected_length >= 0 and received != expected_length:
                raise RegistryError(SIZE_INVALID, {"expected": expected_length, "received": received})
            return UploadInfo(upload_id, current + received, session.started_at)

    def commit(self, repository: str, upload_id: str, digest: str) -> BlobInfo:
        """Verifies the upload against ``digest`` and moves it into place; DIGEST_INVALID otherwise."""
        wanted = digests.parse(digest)
        session = self._session(upload_id)
        with session.lock:
            size = self._size(repository, upload_id)
            data_path = layout.upload_data(repository, upload_id)
            if session.hasher is not None and session.hasher.name == wanted.algorithm and session.hashed == size:
                actual = session.hasher.hexdigest()
            else:
                actual = self._rehash(data_path, wanted.algorithm)
            if actual != wanted.hex:
                self._remove(repository, upload_id)
                raise _mismatch(digest)
            self._place(repository, data_path, digest, size)
            self._observe_duration(repository, upload_id, session)
            self._remove(repository, upload_id)
            return BlobInfo(digest, size)

    def store(self, repository: str, data: Iterable[bytes], digest: str, expected_length: int = -1) -> BlobInfo:
        """A whole blob in one call (a monolithic push, a mirror's fetch): written, hashed as it
        arrives, verified and moved into place, like a session's commit, but with nothing a
        resumable session needs (no start-time file, no per-process state): two fewer file writes
        and fsyncs on the hot path of small pushes. Nothing stays behind when it fails; a process
        killed meanwhile leaves a folder that upload purging removes by its age."""
        wanted = digests.parse(digest)
        hasher = digests.hasher(wanted.algorithm)
        upload_id = str(uuid.uuid4())
        data_path = layout.upload_data(repository, upload_id)
        started = time.time()
        received = 0
        try:
            writer = self.driver.writer(data_path)
            try:
                for chunk in data:
                    writer.write(chunk)
                    hasher.update(chunk)
                    received += len(chunk)
            except BaseException:
                writer.cancel()
                raise
            writer.commit()
            if expected_length >= 0 and received != expected_length:
                raise RegistryError(SIZE_INVALID, {"expected": expected_length, "received": received})
            if hasher.hexdigest() != wanted.hex:
                raise _mismatch(digest)
            self._place(repository, data_path, digest, received)
            UPLOAD_DURATION.observe(max(0.0, time.time() - started))
            return BlobInfo(digest, received)
        finally:
            with contextlib.suppress(PathNotFound):
                self.driver.delete(layout.upload_dir(repository, upload_id))

    def _place(self, repository: str, data_path: str, digest: str, size: int) -> None:
        """Moves verified bytes to the digest's path and links them into the repository. Moved
        even when the content is there already (same bytes, atomic replace): that makes the blob
        young again, so garbage collection's delay protects it until this push's manifest
        arrives, however long ago it was last referenced."""
        self.driver.move(data_path, layout.blob_data(digest))
        self.blobs.stored(digest, size)
        self.blobs.link(repository, digest)

    def cancel(self, repository: str, upload_id: str) -> None:
        self.status(repository, upload_id)
        self._remove(repository, upload_id)

    def discard(self, repository: str, upload_id: str) -> None:
        """Removes an upload whether or not it (still) exists."""
        with self._session(upload_id).lock:
            self._remove(repository, upload_id)

    def _remove(self, repository: str, upload_id: str) -> None:
        try:
            self.driver.delete(layout.upload_dir(repository, upload_id))
        except PathNotFound:
            pass
        self._forget(upload_id)

    def _observe_duration(self, repository: str, upload_id: str, session: _Session) -> None:
        started = session.started_at
        if not started:  # started in another process: its start time is in storage
            try:
                started = int(self.driver.get_content(layout.upload_started_at(repository, upload_id)) or 0)
            except Exception:  # noqa: BLE001 - a metric must never fail a commit that succeeded
                return
        # Whole seconds: short uploads land in the first buckets, which is all they need.
        UPLOAD_DURATION.observe(max(0.0, time.time() - started))

    def _rehash(self, path: str, algorithm: str) -> str:
        hasher = digests.hasher(algorithm)
        with self.driver.reader(path) as reader:
            while chunk := reader.read(_REHASH_CHUNK):
                hasher.update(chunk)
        return hasher.hexdigest()


def _mismatch(digest: str) -> RegistryError:
    return RegistryError(DIGEST_INVALID, {"digest": digest, "reason": "content does not match"})
