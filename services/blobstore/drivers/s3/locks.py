"""Locks shared by every process on the bucket, from conditional requests alone.

S3 has no lock service: a held lock is an object under ``.berth-locks~/`` (a key no driver path
maps to, so listings never show it), created only where none is (If-None-Match), renewed while
held and deleted after, both conditional on its ETag (If-Match). The store must honour those
headers, as S3 and moto do. A holder that dies stops renewing, and after ``LOCK_LEASE`` a waiter
takes the lock over.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

from services.blobstore.drivers.base import StorageError
from services.blobstore.drivers.s3.bucket import Bucket, Conflict, Missing

log = logging.getLogger("berth.blobstore")

LOCKS = ".berth-locks~"
# Seconds after its last renewal (by the store's clock) that a lock object counts as left by a
# holder that died; holders renew every third of it, waiters then take it over. Half the gateway's
# call timeout: a write held up by a dead holder still gets its answer.
LOCK_LEASE = 15.0
# Seconds between attempts on a lock another process holds: the first wait, doubling up to the last.
LOCK_WAIT = (0.005, 0.1)


@contextmanager
def held(bucket: Bucket, key: str) -> Iterator[None]:
    """Holds the lock object ``key``: waits for it, renews it while the block runs, deletes it after."""
    lease = Lease(bucket, key, _acquire(bucket, key))
    try:
        yield
    finally:
        lease.release()


def _acquire(bucket: Bucket, key: str) -> str:
    """Waits until the lock object ``key`` is this caller's; returns its ETag."""
    wait = LOCK_WAIT[0]
    while True:
        try:
            return _put_lock(bucket, key, IfNoneMatch="*")
        except Conflict:
            pass
        held = _lock_age(bucket, key)
        if held is None:
            continue  # released meanwhile
        etag, age = held
        if age > LOCK_LEASE:
            try:
                # Its holder stopped renewing it: take it over. The ETag condition lets only
                # one waiter do so, and only if the holder has not renewed it after all.
                return _put_lock(bucket, key, IfMatch=etag)
            except (Conflict, Missing):
                continue
        time.sleep(wait * random.uniform(0.5, 1.5))
        wait = min(wait * 2, LOCK_WAIT[1])


def _put_lock(bucket: Bucket, key: str, **condition: str) -> str:
    """Writes a lock object of unique content (so a unique ETag) if ``condition`` holds."""
    body = uuid.uuid4().hex.encode()
    return cast(str, bucket.call("put_object", Key=key, Body=body, **condition, **bucket.sse)["ETag"])


def _lock_age(bucket: Bucket, key: str) -> tuple[str, float] | None:
    """The ETag of the lock object and seconds since it was written, both by the store's clock
    (its Date header), so a skewed clock here cannot make a live holder's lock look stale."""
    try:
        response = bucket.call("head_object", Key=key)
    except Missing:
        return None
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    now = email.utils.parsedate_to_datetime(date).timestamp() if date else time.time()
    return response["ETag"], now - response["LastModified"].timestamp()


class Lease:
    """A held lock object, rewritten (If-Match its ETag) every third of LOCK_LEASE until released,
    so it never looks stale while its holder lives, however long it holds it."""

    def __init__(self, bucket: Bucket, key: str, etag: str) -> None:
        self._bucket = bucket
        self._key = key
        self._etag = etag
        self._released = threading.Event()
        self._renewer = threading.Thread(target=self._renew, name="s3-lock-renewer", daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        while not self._released.wait(LOCK_LEASE / 3):
            try:
                self._etag = _put_lock(self._bucket, self._key, IfMatch=self._etag)
            except StorageError as exc:
                log.warning("lock %s not renewed (%s): it may be taken over while held", self._key, exc)

    def release(self) -> None:
        self._released.set()
        self._renewer.join()
        try:
            self._bucket.call("delete_object", Key=self._key, IfMatch=self._etag)
        except (Conflict, Missing):
            log.warning("lock %s was taken over while held: its renewals failed for %ss", self._key, LOCK_LEASE)
