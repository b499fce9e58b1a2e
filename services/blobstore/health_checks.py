"""The blobstore's readiness check: whether it can do its job now (the storage answers, and takes
a write).

Asked by ``/_ready`` on the HTTP listener (``http_listener.py``) and before the gRPC health service
first says SERVING. Not ``services.common.health``'s async checks: the blobstore has no event loop
(a thread pool serves gRPC, a stdlib server HTTP), so the check is a blocking call, its result shared
between both callers. Only a real write shows
that a store is usable (a full disk, a read-only mount, revoked bucket credentials all still allow
a stat), so the check writes a few bytes under ``/_berth_probe`` and deletes them: outside the
registry's layout (``/docker/registry/v2``), so no listing, catalog or garbage collection ever sees
them, and under a fresh name per check, so replicas sharing a store never touch each other's.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from services.blobstore.drivers import PathNotFound, StorageDriver

log = logging.getLogger("berth.blobstore")

PROBE_DIR = "/_berth_probe"
# Probes from several sources (kubelet, a load balancer, people) share one result this long, so
# a flood of /_ready requests costs the store at most one write a second.
_REUSE_SECONDS = 1.0
# A check stuck on an unreachable store answers "not ready" after this long instead of piling up
# probe threads behind it.
_WAIT_SECONDS = 5.0


class Readiness:
    def __init__(self, driver: StorageDriver) -> None:
        self._driver = driver
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._reason: str | None = "not checked yet"
        self._stopping = False

    def stopping(self) -> None:
        """From now on not ready: a load balancer should stop sending calls before they fail."""
        self._stopping = True

    def check(self) -> str | None:
        """None when ready, else why not (short, for a probe's log and the /_ready body)."""
        if self._stopping:
            return "shutting down"
        if not self._lock.acquire(timeout=_WAIT_SECONDS):
            return f"storage check still running after {_WAIT_SECONDS:g}s"
        try:
            if time.monotonic() - self._checked_at >= _REUSE_SECONDS:
                self._reason = self._probe()
                self._checked_at = time.monotonic()
            return self._reason
        finally:
            self._lock.release()

    def _probe(self) -> str | None:
        step = "stat /"
        try:
            try:
                self._driver.stat("/")
            except PathNotFound:
                pass  # an answer all the same: some stores have no root object until written to
            path = f"{PROBE_DIR}/{uuid.uuid4().hex}"
            step = "write"
            self._driver.put_content(path, b"ok")
            step = "delete"
            self._driver.delete(path)
        except Exception as exc:  # noqa: BLE001 - whatever the driver raises means "not ready"
            reason = f"storage {step} failed: {type(exc).__name__}: {exc}"[:300]
            log.warning("not ready: %s", reason)
            return reason
        return None
