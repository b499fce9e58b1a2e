"""One webhook: a bounded queue of events and a worker that POSTs them in order.

Why a queue per endpoint: one slow or dead listener must not hold back the others, and none of them
may hold back a request. ``offer`` is O(1) and never waits; beyond ``queue_size`` waiting events the
oldest is dropped and counted. The worker sends what is waiting as one envelope (up to
``MAX_BATCH`` events) and retries the same envelope until it is acknowledged, so order holds per
endpoint. Every failure waits ``backoff``; once ``threshold`` failures came in a row the endpoint
counts as down and the wait doubles per failure, up to ``MAX_BACKOFF``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from urllib.parse import urlsplit, urlunsplit

import httpx

from services.common.config import NotificationEndpoint
from services.common.metrics import EVENTS_DROPPED, EVENTS_FAILED, EVENTS_QUEUED, EVENTS_SENT
from services.gateway.events.envelope import EVENTS_MEDIA_TYPE, Event, envelope
from services.gateway.events.stats import EndpointStats

log = logging.getLogger("berth.gateway.events")

MAX_BATCH = 50
MAX_BACKOFF = 60.0
# Least seconds between two failure (or drop) messages of one endpoint.
LOG_INTERVAL = 30.0


def safe_url(url: str) -> str:
    """The URL without user:password and query, which may hold secrets."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def retry_delay(failures: int, backoff: float, threshold: int) -> float:
    """Seconds to wait after the ``failures``-th failure in a row."""
    return min(backoff * 2 ** max(0, failures - threshold), MAX_BACKOFF)


class _Throttle:
    """Lets one message through per interval and counts the ones it held back."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last = float("-inf")
        self.held = 0

    def allow(self) -> int | None:
        """None when the message should be skipped, else how many were skipped before it."""
        now = time.monotonic()
        if now - self.last < self.interval:
            self.held += 1
            return None
        self.last, held, self.held = now, self.held, 0
        return held


class Endpoint:
    def __init__(self, config: NotificationEndpoint, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.name = config.name
        self.stats = EndpointStats(config.name, safe_url(config.url), config.queue_size)
        self.ignored_media_types = frozenset(config.ignoredmediatypes) | frozenset(config.ignore.mediatypes)
        self.ignored_actions = frozenset(config.ignore.actions)
        self._queue: deque[Event] = deque()
        self._inflight = 0
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._fail_log = _Throttle(LOG_INTERVAL)
        self._drop_log = _Throttle(LOG_INTERVAL)
        # Prometheus children bound once: offer() runs inside requests.
        self._depth = EVENTS_QUEUED.labels(config.name)
        self._sent = EVENTS_SENT.labels(config.name)
        self._failed = EVENTS_FAILED.labels(config.name)
        self._dropped = EVENTS_DROPPED.labels(config.name)

    def accepts(self, event: Event) -> bool:
        """False when the endpoint's ignore rules exclude the event's action or media type."""
        if event.get("action") in self.ignored_actions:
            return False
        return event.get("target", {}).get("mediaType") not in self.ignored_media_types

    def offer(self, event: Event) -> None:
        """Queues the event without waiting; drops the oldest waiting one when the queue is full."""
        if len(self._queue) >= self.config.queue_size:
            self._queue.popleft()
            self.stats.dropped += 1
            self._dropped.inc()
            held = self._drop_log.allow()
            if held is not None:
                log.warning(
                    "notification endpoint %r: queue full (%d), dropping the oldest events (%d dropped so far)",
                    self.name,
                    self.config.queue_size,
                    self.stats.dropped,
                )
        self._queue.append(event)
        self.stats.queued += 1
        self._update_pending()
        self._wakeup.set()

    def _update_pending(self) -> None:
        self.stats.pending = len(self._queue) + self._inflight
        self._depth.set(self.stats.pending)

    async def start(self) -> None:
        headers = [(key, value) for key, values in self.config.headers.items() for value in values]
        headers.append(("Content-Type", EVENTS_MEDIA_TYPE))
        self._client = httpx.AsyncClient(headers=headers, timeout=self.config.timeout, follow_redirects=True, transport=self._transport)
        self._task = asyncio.create_task(self._run(), name=f"notifications:{self.name}")

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = [self._queue.popleft() for _ in range(min(MAX_BATCH, len(self._queue)))]
            self._inflight = len(batch)
            delivered = await self._deliver(batch)
            self._inflight = 0
            if not delivered:  # stopping with the endpoint failing: give the rest up
                self._queue.extendleft(reversed(batch))
                self._update_pending()
                return
            self.stats.delivered += len(batch)
            self._sent.inc(len(batch))
            self._update_pending()

    async def _deliver(self, batch: list[Event]) -> bool:
        """POSTs one envelope until it is acknowledged; False only when stopping meanwhile."""
        body = envelope(batch)
        failures = 0
        while True:
            reason = await self._post(body)
            if reason is None:
                if self.stats.down:
                    log.warning("notification endpoint %r is back after %d failed attempts", self.name, failures)
                    self.stats.down = False
                return True
            failures += 1
            self.stats.failed_attempts += 1
            self._failed.inc()
            if self._stopping:
                return False
            delay = retry_delay(failures, self.config.backoff, self.config.threshold)
            if failures >= self.config.threshold and not self.stats.down:
                self.stats.down = True
            held = self._fail_log.allow()
            if held is not None:
                log.warning(
                    "notification endpoint %r (%s): delivery of %d events failed (%s); retrying in %.1fs%s",
                    self.name,
                    self.stats.url,
                    len(batch),
                    reason,
                    delay,
                    f" ({held} similar messages skipped)" if held else "",
                )
            await asyncio.sleep(delay)

    async def _post(self, body: bytes) -> str | None:
        """None on success, else a short reason that holds no secret (no headers, no URL)."""
        assert self._client is not None
        try:
            response = await self._client.post(self.config.url, content=body)
        except Exception as exc:  # noqa: BLE001 - whatever it was, the worker must live on and retry
            return type(exc).__name__
        if 200 <= response.status_code < 400:
            return None
        return f"HTTP {response.status_code}"

    async def aclose(self, deadline: float) -> None:
        """Delivers what is waiting while the endpoint answers, until ``deadline`` (monotonic)."""
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
        self.stats.abandoned = len(self._queue) + self._inflight
        if self.stats.abandoned or self.stats.dropped:
            log.warning(
                "notification endpoint %r: delivered %d events, dropped %d, %d undelivered at shutdown",
                self.name,
                self.stats.delivered,
                self.stats.dropped,
                self.stats.abandoned,
            )
