"""Who may POST /events to the search service: the blobstore's shared secret, reused.

The search service applies whatever envelope it is sent, and a forged one adds, hides or removes
repositories in everyone's search results. So when it listens beyond loopback (``search.security``
``auto`` resolves to ``token`` then, as ``blobstore.security`` does for the blobstore) POST /events
needs ``Authorization: Bearer <blobstore.token>``, compared in constant time, and anything else is
401 in the error envelope before the body is read. The gateways, which hold the token for the
blobstore already, send it on their search endpoint; registry:2 sends it through its notification
endpoint's ``headers``.

Both ends live here, so what one side sends and the other checks cannot drift apart.
"""

from __future__ import annotations

import hmac
import logging
import time

from starlette.requests import Request

from services.common.config import ConfigError, NotificationEndpoint, Settings
from services.common.errors import UNAUTHORIZED, RegistryError

log = logging.getLogger("berth.search")

HEADER = "Authorization"
MIN_LENGTH = 16
# Least seconds between two refusal lines (the HTTP metrics count every refusal).
LOG_INTERVAL = 10.0
CHALLENGE = 'Bearer realm="berth-search"'


def events_url(settings: Settings) -> str:
    """The search service's /events as the gateways reach it."""
    return f"{settings.search.base_url}/events"


def required_token(settings: Settings) -> str | None:
    """The token POST /events must carry, or None when the search service asks for none.

    ConfigError naming ``blobstore.token`` when one is required and missing or short: the search
    service and the gateways check this at start, so the mistake stops them there instead of
    surfacing as refused events.
    """
    if settings.search.effective_security != "token":
        return None
    token = settings.blobstore.token
    if len(token) < MIN_LENGTH:
        why = f" (auto: the search service listens on {settings.search.addr})" if settings.search.security == "auto" else ""
        raise ConfigError(
            f"blobstore.token: a shared secret of at least {MIN_LENGTH} characters is required when search.security "
            f"is token{why}; the search service asks for it on POST /events"
        )
    return token


def with_token(settings: Settings, endpoint: NotificationEndpoint) -> NotificationEndpoint:
    """The gateway's endpoint for the search service's /events, with the token in its headers.

    As the blobstore's ``call_metadata`` does: with ``auto`` the token goes whenever one is
    configured, because this gateway's own view of ``search.addr`` may be the loopback default
    while the service it reaches through ``search.url`` listens beyond it (a service that asks for
    none ignores it); with ``none`` it never goes. Only an endpoint whose URL is the search
    service's gets it, and one that sets its own Authorization keeps it.
    """
    required_token(settings)  # a token the service requires but this gateway lacks stops the start
    token = settings.blobstore.token
    if not token or settings.search.security == "none" or endpoint.url.rstrip("/") != events_url(settings):
        return endpoint
    if any(name.lower() == HEADER.lower() for name in endpoint.headers):
        return endpoint
    return endpoint.model_copy(update={"headers": {**endpoint.headers, HEADER: [f"Bearer {token}"]}})


class EventsGuard:
    """The search service's check on POST /events: ``Authorization: Bearer <token>`` or 401."""

    def __init__(self, token: str | None) -> None:
        self._expected = f"Bearer {token}".encode() if token else None
        self._logged_at = float("-inf")

    @property
    def enabled(self) -> bool:
        return self._expected is not None

    def check(self, request: Request) -> None:
        """Returns when the request may post events; RegistryError UNAUTHORIZED (401) otherwise."""
        if self._expected is None:
            return
        sent = request.headers.get("authorization")
        if sent is not None and hmac.compare_digest(sent.strip().encode("utf-8", "replace"), self._expected):
            return
        reason = "missing" if sent is None else "invalid"
        now = time.monotonic()
        if now - self._logged_at >= LOG_INTERVAL:
            self._logged_at = now
            peer = request.client.host if request.client else "?"
            log.warning("refused POST /events from %s: %s token (further refusals for %ds not logged)", peer, reason, int(LOG_INTERVAL))
        raise RegistryError(
            UNAUTHORIZED,
            {"reason": f"{reason} credentials: POST /events needs Authorization: Bearer <blobstore.token>"},
            headers={"WWW-Authenticate": CHALLENGE},
        )
