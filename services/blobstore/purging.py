"""Upload purging (registry:2's ``storage.maintenance.uploadpurging``) and the schedule that runs
the blobstore's periodic maintenance.

An upload session is ``repositories/<name>/_uploads/<id>/{data,startedat}``; one whose start is
older than ``age`` is removed whole (on S3 with its multipart upload aborted), after which its URL
answers 404 BLOB_UPLOAD_UNKNOWN. Next to the sessions lie what ended ones leave (``<id>.ended``) and
what a process killed while storing a whole blob left (``<id>.data``): removed when older than
``age``, which is also how long a session's first URL stays valid (services/blobstore/uploads.py),
so a marker is never needed past it. The same pass asks the driver for what a process killed
mid-write left (the filesystem's ``.berth-tmp~*`` files, S3's incomplete multipart uploads) older
than ``age``. ``dryrun`` only logs.

With upload purging off, users' sessions stay, as in registry:2, but Berth's own leftovers are
still removed (``sessions=False``): else every push would leave a file for good.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from services.blobstore import layout
from services.blobstore.drivers import PathNotFound, StorageDriver, StorageError
from services.blobstore.uploads import Uploads
from services.common.errors import RegistryError

log = logging.getLogger("berth.blobstore.purging")


@dataclass
class PurgeReport:
    uploads: list[str] = field(default_factory=list)  # "<repository>/<upload id>"
    temporary: list[str] = field(default_factory=list)
    kept: int = 0


def upload_folders(driver: StorageDriver) -> Iterator[tuple[str, str]]:
    """(repository, path of its ``_uploads`` folder) of every repository that has one."""

    def below(path: str, prefix: str) -> Iterator[tuple[str, str]]:
        try:
            children = driver.list(path)
        except PathNotFound:
            return
        for child in children:
            leaf = child.rsplit("/", 1)[1]
            if leaf == "_uploads":
                yield prefix.rstrip("/"), child
            elif not leaf.startswith("_"):
                yield from below(child, f"{prefix}{leaf}/")

    yield from below(layout.REPOSITORIES, "")


def _started(driver: StorageDriver, folder: str) -> float | None:
    try:
        return float(int(driver.get_content(f"{folder}/startedat") or 0))
    except (PathNotFound, ValueError):
        pass
    try:  # no readable start time (a crash between creating the folder and writing it)
        return driver.stat(folder).modified
    except PathNotFound:
        return None  # gone meanwhile


def _purge_leftover(driver: StorageDriver, path: str, cutoff: float, dryrun: bool, report: PurgeReport) -> None:
    try:
        if driver.stat(path).modified >= cutoff:
            return
        if not dryrun:
            driver.delete(path)
    except PathNotFound:
        return  # gone meanwhile
    report.temporary.append(path)


def purge_uploads(uploads: Uploads, age: float, dryrun: bool = False, now: float | None = None, sessions: bool = True) -> PurgeReport:
    """Removes what is older than ``age``: sessions (unless ``sessions`` is false), ended
    sessions' markers, staging files and the driver's temporary files."""
    driver = uploads.driver
    now = time.time() if now is None else now
    cutoff = now - age
    report = PurgeReport()
    for repository, folder in upload_folders(driver):
        try:
            entries = driver.list(folder)
        except PathNotFound:
            continue
        for session in entries:
            if layout.is_upload_leftover(session):
                _purge_leftover(driver, session, cutoff, dryrun, report)
                continue
            if not sessions:
                continue
            started = _started(driver, session)
            if started is None:
                continue
            if started >= cutoff:
                report.kept += 1
                continue
            upload_id = session.rsplit("/", 1)[1]
            report.uploads.append(f"{repository}/{upload_id}")
            if dryrun:
                continue
            try:
                uploads.discard(repository, upload_id)
            except RegistryError:  # a folder no upload id names: not ours to interpret, but stale
                try:
                    driver.delete(session)
                except PathNotFound:
                    pass
    report.temporary += driver.purge_temporary(cutoff, dryrun)
    verb = "would remove" if dryrun else "removed"
    if report.uploads or report.temporary or dryrun:
        log.info(
            "upload purging %s %d uploads and %d temporary files older than %ss (%d uploads kept)%s",
            verb,
            len(report.uploads),
            len(report.temporary),
            int(age),
            report.kept,
            "".join(f"\n  {item}" for item in [*report.uploads, *report.temporary]) if dryrun else "",
        )
    return report


class Periodic:
    """Runs ``task`` on a daemon thread: first after a short jittered wait (so replicas started
    together do not align), then every ``interval`` seconds, give or take a tenth."""

    def __init__(self, name: str, interval: float, task: Callable[[], object], first: float | None = None) -> None:
        self.name = name
        self.interval = interval
        self.task = task
        self.first = random.uniform(0.5, 1.0) * min(interval, 60.0) if first is None else first
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        wait = self.first
        while not self._stop.wait(wait):
            try:
                self.task()
            except (StorageError, RegistryError, OSError) as exc:
                log.warning("%s failed: %s (next run in %ss)", self.name, exc, int(self.interval))
            except Exception:  # the next round tries again
                log.exception("%s failed", self.name)
            wait = self.interval * random.uniform(0.9, 1.1)
