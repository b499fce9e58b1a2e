"""Upload sessions: where uploads are written, verified and moved into place.

An upload's bytes live under the repository's ``_uploads/<id>/data`` until the client names the
digest (a whole blob written in one call: in ``_uploads/<uuid>.data``). Then the content is hashed
and compared, and only verified content is moved to its content-addressed path, atomically; a
mismatch ends the session and stores nothing. A reader can therefore never see a partial or
unverified blob.

A session reaches storage with its first bytes, not when it starts: the gateway names and signs a
new session itself and marks its URL *fresh* (``fresh_since``, the start time). A fresh session
absent from storage is an empty one; any other absent session is unknown (404). So an ended session
(committed or cancelled) leaves a marker that keeps its fresh URL from bringing it back, and a fresh
session older than upload purging's age is unknown too. A small push (POST, then PUT with the whole
blob) thereby costs one blobstore call and no session files: the PUT finds its fresh session empty
and stores the blob as a monolithic push does (``store``), then leaves the marker.

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
    def __init__(self, driver: StorageDriver, blobs: Blobs, fresh_lifetime: float | None = None) -> None:
        self.driver = driver
        self.blobs = blobs
        # How long a fresh session absent from storage stays valid: upload purging's age, after
        # which purging removes the markers that guard fresh URLs (None: for ever, tests only).
        self.fresh_lifetime = fresh_lifetime
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
        """A new session in storage at once, its bytes hashed with ``algorithm`` as they arrive
        (DIGEST_INVALID if unsupported). This release's gateways start sessions without the
        blobstore (fresh ones); the previous release's ask for this (StartUpload)."""
        session_hasher = digests.hasher(algorithm)
        upload_id = str(uuid.uuid4())
        started = int(time.time())
        self._create(repository, upload_id, started)
        self.driver.writer(layout.upload_data(repository, upload_id)).commit()
        session = self._session(upload_id)
        session.hasher = session_hasher
        return UploadInfo(upload_id, 0, started)

    def _create(self, repository: str, upload_id: str, started: int) -> None:
        """Puts a session in storage (its data file comes with its first write)."""
        self.driver.put_content(layout.upload_started_at(repository, upload_id), str(started).encode())
        self._session(upload_id).started_at = started

    def status(self, repository: str, upload_id: str, fresh_since: int = 0) -> UploadInfo:
        size = self._stored_size(repository, upload_id, fresh_since)
        if size is None:
            return UploadInfo(upload_id, 0, fresh_since)
        try:
            started = int(self.driver.get_content(layout.upload_started_at(repository, upload_id)) or 0)
        except (PathNotFound, ValueError):
            raise RegistryError(BLOB_UPLOAD_UNKNOWN, {"upload": upload_id}) from None
        return UploadInfo(upload_id, size, started)

    def unstored(self, repository: str, upload_id: str, fresh_since: int) -> bool:
        """Whether the session is a fresh one that has nothing in storage yet; BLOB_UPLOAD_UNKNOWN
        when it is neither stored nor fresh."""
        return self._stored_size(repository, upload_id, fresh_since) is None

    def _stored_size(self, repository: str, upload_id: str, fresh_since: int) -> int | None:
        """Bytes received so far, None for a fresh session not in storage yet (one request for a
        stored session: writes and commits, the hot path, need nothing else)."""
        size = self.driver.file_size(layout.upload_data(repository, upload_id))
        if size is not None:
            return size
        if (
            fresh_since > 0
            and (self.fresh_lifetime is None or fresh_since >= time.time() - self.fresh_lifetime)
            and self.driver.file_size(layout.upload_ended(repository, upload_id)) is None
        ):
            return None
        raise RegistryError(BLOB_UPLOAD_UNKNOWN, {"upload": upload_id})

    def write(
        self,
        repository: str,
        upload_id: str,
        offset: int,
        data: Iterable[bytes],
        expected_length: int = -1,
        algorithm: str = digests.CANONICAL,
        fresh_since: int = 0,
    ) -> UploadInfo:
        """Appends ``data`` at ``offset``, which must be where the upload ends now (negative: anywhere).

        ``algorithm`` hashes an upload that is still empty (the client's latest word on it); bytes
        already received keep the running hash they have, if any.
        The answer's ``started_at`` is 0 unless the session started in this process.
        """
        session = self._session(upload_id)
        with session.lock:
            stored = self._stored_size(repository, upload_id, fresh_since)
            current = stored or 0
            if offset >= 0 and offset != current:
                raise RegistryError(RANGE_INVALID, {"size": current, "offset": offset})
            if stored is None:
                self._create(repository, upload_id, fresh_since)
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

    def commit(self, repository: str, upload_id: str, digest: str, fresh_since: int = 0) -> BlobInfo:
        """Verifies the upload against ``digest`` and moves it into place; DIGEST_INVALID otherwise."""
        wanted = digests.parse(digest)
        session = self._session(upload_id)
        with session.lock:
            size = self._stored_size(repository, upload_id, fresh_since)
            if size is None:  # a fresh session with nothing written: the empty blob, or a mismatch
                return self.store(repository, (), digest, upload_id=upload_id)
            data_path = layout.upload_data(repository, upload_id)
            if session.hasher is not None and session.hasher.name == wanted.algorithm and session.hashed == size:
                actual = session.hasher.hexdigest()
            else:
                actual = self._rehash(data_path, wanted.algorithm)
            if actual != wanted.hex:
                self._end(repository, upload_id)
                raise _mismatch(digest)
            # Marked before the data leaves: no moment shows a fresh URL neither (another
            # replica would take the session for an empty one).
            self._mark_ended(repository, upload_id)
            self._place(repository, data_path, digest, size)
            self._observe_duration(repository, upload_id, session)
            self._remove(repository, upload_id)
            return BlobInfo(digest, size)

    def store(self, repository: str, data: Iterable[bytes], digest: str, expected_length: int = -1, upload_id: str = "") -> BlobInfo:
        """A whole blob in one call (a monolithic push, a mirror's fetch, the only write of a fresh
        session named by ``upload_id``): written, hashed as it arrives, verified and moved into
        place, like a session's commit, but with nothing a resumable session needs (no start-time
        file, no per-process state). Nothing is stored when it fails (a fresh session stays fresh,
        unless the content did not match: that ends it, as it ends a stored one); a process killed
        meanwhile leaves a file that upload purging removes by its age."""
        wanted = digests.parse(digest)
        hasher = digests.hasher(wanted.algorithm)
        # Not in the fresh session's own place: it stays empty meanwhile.
        data_path = layout.upload_staging(repository, str(uuid.uuid4()))
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
                if upload_id:  # a failed commit ends a session, as it does a stored one's
                    self._mark_ended(repository, upload_id)
                raise _mismatch(digest)
            self._place(repository, data_path, digest, received)
        except BaseException:
            with contextlib.suppress(PathNotFound):
                self.driver.delete(data_path)
            raise
        UPLOAD_DURATION.observe(max(0.0, time.time() - started))
        if upload_id:  # never stored (that is why it came here): only the mark to leave
            self._mark_ended(repository, upload_id)
        return BlobInfo(digest, received)

    def _place(self, repository: str, data_path: str, digest: str, size: int) -> None:
        """Moves verified bytes to the digest's path and links them into the repository. Moved
        even when the content is there already (same bytes, atomic replace): that makes the blob
        young again, so garbage collection's delay protects it until this push's manifest
        arrives, however long ago it was last referenced."""
        self.driver.move(data_path, layout.blob_data(digest))
        self.blobs.stored(digest, size)
        self.blobs.link(repository, digest)

    def cancel(self, repository: str, upload_id: str, fresh_since: int = 0) -> None:
        with self._session(upload_id).lock:
            self._stored_size(repository, upload_id, fresh_since)
            self._end(repository, upload_id)

    def _end(self, repository: str, upload_id: str) -> None:
        self._mark_ended(repository, upload_id)
        self._remove(repository, upload_id)

    def _mark_ended(self, repository: str, upload_id: str) -> None:
        """Leaves the marker that no URL of the session, fresh ones included, gets past once its
        data is gone (data in storage wins over it); upload purging removes it in time."""
        self.driver.put_marker(layout.upload_ended(repository, upload_id))

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
