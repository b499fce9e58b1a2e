"""The pull-through cache's records (docs/mirror.md), kept in the store next to what they describe.

``repositories/<name>/_mirror/{manifests,blobs}/<alg>-<hex>`` holds when a mirrored manifest or blob
was last pulled and how long it lives unpulled (``{"pulled": t, "ttl": s}``);
``_mirror/tags/<tag>`` when the tag's digest was last asked of the upstream (``{"checked": t}``).
Records are small files written whole (``put_content`` is atomic), so they survive restarts and
every gateway and blobstore replica over the same storage sees the same ones.

``purge`` removes what expired: a manifest's revision with the tags pointing at it (and its
referrer entry), a blob's link. Like a client's delete it unlinks; the bytes stay for other
repositories that link the same content, and for garbage collection.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from services.blobstore import layout
from services.blobstore.blobs import Blobs
from services.blobstore.drivers import PathNotFound, StorageDriver
from services.blobstore.manifests import Catalog, Manifests
from services.common.errors import RegistryError

log = logging.getLogger("berth.blobstore.mirror")


@dataclass
class PurgeResult:
    manifests: int = 0
    blobs: int = 0


class MirrorRecords:
    def __init__(self, driver: StorageDriver, manifests: Manifests, blobs: Blobs, catalog: Catalog) -> None:
        self.driver = driver
        self.manifests = manifests
        self.blobs = blobs
        self.catalog = catalog
        self._purging = threading.Lock()

    def touch(
        self, repository: str, manifests: Iterable[str], blobs: Iterable[str], checked_tag: str, ttl: float, now: float | None = None
    ) -> None:
        now = time.time() if now is None else now
        record = json.dumps({"pulled": now, "ttl": ttl}).encode()
        for kind, items in (("manifests", manifests), ("blobs", blobs)):
            for digest in dict.fromkeys(items):
                self.driver.put_content(layout.mirror_record(repository, kind, digest), record)
        if checked_tag:
            self.driver.put_content(layout.mirror_record(repository, "tags", checked_tag), json.dumps({"checked": now}).encode())

    def tag_checked(self, repository: str, tag: str) -> float:
        try:
            return float(json.loads(self.driver.get_content(layout.mirror_record(repository, "tags", tag)))["checked"])
        except (PathNotFound, ValueError, KeyError, TypeError):
            return 0.0

    def purge(self, now: float | None = None) -> PurgeResult:
        """Removes what was not pulled within its ttl, in every repository that has records."""
        now = time.time() if now is None else now
        result = PurgeResult()
        if not self._purging.acquire(blocking=False):
            return result  # one purge at a time per process
        try:
            for repository in self._mirrored_repositories():
                self._purge_repository(repository, now, result)
        finally:
            self._purging.release()
        if result.manifests or result.blobs:
            log.info("mirror purge removed %d manifests and %d blobs not pulled within their ttl", result.manifests, result.blobs)
        return result

    def _mirrored_repositories(self) -> list[str]:
        found = []
        for name in self.catalog.list("", 0).names:
            try:
                self.driver.stat(f"{layout.repository(name)}/_mirror")
                found.append(name)
            except (PathNotFound, RegistryError):
                continue
        return found

    def _expired(self, repository: str, kind: str, now: float) -> list[tuple[str, str]]:
        """(digest, record path) of the expired records of one kind."""
        try:
            paths = self.driver.list(layout.mirror_dir(repository, kind))
        except PathNotFound:
            return []
        expired = []
        for path in paths:
            leaf = path.rsplit("/", 1)[1]
            alg, _, hex_ = leaf.partition("-")
            try:
                record = json.loads(self.driver.get_content(path))
                pulled, ttl = float(record["pulled"]), float(record["ttl"])
            except PathNotFound:
                continue
            except (ValueError, KeyError, TypeError):
                log.warning("unreadable mirror record %s: removed", path)
                self._delete_quietly(path)
                continue
            if ttl > 0 and now >= pulled + ttl:
                expired.append((f"{alg}:{hex_}", path))
        return expired

    def _purge_repository(self, repository: str, now: float, result: PurgeResult) -> None:
        for digest, path in self._expired(repository, "manifests", now):
            try:
                subject = ""
                try:
                    subject = (json.loads(self.manifests.get(repository, digest).payload).get("subject") or {}).get("digest", "")
                except (RegistryError, ValueError, AttributeError):
                    pass
                self.manifests.delete(repository, digest, subject)
                result.manifests += 1
            except RegistryError:
                pass  # already gone
            self._delete_quietly(path)
        for digest, path in self._expired(repository, "blobs", now):
            try:
                self.blobs.delete(repository, digest)
                result.blobs += 1
            except RegistryError:
                pass
            self._delete_quietly(path)
        # Tag records of tags that no longer exist (their manifest expired).
        try:
            tag_records = self.driver.list(layout.mirror_dir(repository, "tags"))
        except PathNotFound:
            return
        try:
            tags = set(self.manifests.tags(repository))
        except RegistryError:
            tags = set()
        for path in tag_records:
            if path.rsplit("/", 1)[1] not in tags:
                self._delete_quietly(path)

    def _delete_quietly(self, path: str) -> None:
        try:
            self.driver.delete(path)
        except PathNotFound:
            pass


class Purger:
    """Runs ``purge`` every ``interval`` seconds on a daemon thread until stopped."""

    def __init__(self, records: MirrorRecords, interval: float) -> None:
        self.records = records
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mirror-purge", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.records.purge()
            except Exception:  # the next round tries again
                log.exception("mirror purge failed")
