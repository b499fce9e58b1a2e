"""Fans events out to the configured endpoints, each through its own queue.

The endpoint list is the configuration's, minus disabled ones, plus the search service's
``/events`` when the search service runs (``search_backend`` set: ``sqlalchemy`` or a custom module)
and no endpoint is named ``search`` (so the index follows pushes and deletes without extra
configuration; name one ``search`` to override it, or set ``disabled: true`` on it to turn it off).
The endpoint whose URL is the search service's carries ``blobstore.token`` when the search service
asks for it (``services.common.search_security``).
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx

from services.common import search_security
from services.common.config import NotificationEndpoint, Settings
from services.gateway.events.endpoints import Endpoint
from services.gateway.events.envelope import Event, Source, source_for
from services.gateway.events.stats import EndpointStats

log = logging.getLogger("berth.gateway.events")

SEARCH_ENDPOINT = "search"
# Seconds the gateway's shutdown spends delivering what is still queued.
SHUTDOWN_GRACE = 5.0


def configured_endpoints(settings: Settings) -> list[NotificationEndpoint]:
    """The endpoints to deliver to: enabled ones, with the search service's added when it is on."""
    endpoints = list(settings.notifications.endpoints)
    if not settings.search_service:
        return [e for e in endpoints if not e.disabled]
    if not any(e.name == SEARCH_ENDPOINT for e in endpoints):
        endpoints.append(NotificationEndpoint(name=SEARCH_ENDPOINT, url=search_security.events_url(settings)))
    return [search_security.with_token(settings, e) for e in endpoints if not e.disabled]


class EventBus:
    def __init__(self, endpoints: list[Endpoint], source: Source) -> None:
        self.endpoints = endpoints
        self.source = source

    @classmethod
    def from_settings(cls, settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> EventBus:
        endpoints = [Endpoint(config, transport) for config in configured_endpoints(settings)]
        for endpoint in endpoints:
            log.info(
                "notification endpoint %r: %s (timeout %.1fs, queue %d)",
                endpoint.name,
                endpoint.stats.url,
                endpoint.config.timeout,
                endpoint.config.queue_size,
            )
        return cls(endpoints, source_for(settings.http))

    @property
    def enabled(self) -> bool:
        """False when there is nowhere to send events (routes then skip building them)."""
        return bool(self.endpoints)

    def publish(self, event: Event) -> None:
        """Queues the event for every endpoint that wants it; never waits, never raises."""
        for endpoint in self.endpoints:
            if endpoint.accepts(event):
                endpoint.offer(event)

    def stats(self) -> dict[str, EndpointStats]:
        return {endpoint.name: endpoint.stats for endpoint in self.endpoints}

    async def start(self) -> None:
        for endpoint in self.endpoints:
            await endpoint.start()

    async def aclose(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stops the workers; what an endpoint has not taken within ``grace`` seconds is lost."""
        deadline = time.monotonic() + grace
        await asyncio.gather(*(endpoint.aclose(deadline) for endpoint in self.endpoints))
