"""What every route needs, built once per process at startup and kept on ``app.state.gateway``:
the settings and the shared clients (blobstore, search, events, access, mirror). Routes get it with
``app_state.of(request)``. Not per-request or per-upload state: an upload's own state travels,
signed, in its ``Location`` URL (``upload_state.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from services.common.config import Settings
from services.gateway.access import AccessController
from services.gateway.blobstore_api import BlobstoreAPI
from services.gateway.events.bus import EventBus
from services.gateway.proxy import Mirror
from services.gateway.search_client import SearchClient
from services.gateway.upload_state import UploadStateSigner
from services.gateway.urls import URLBuilder


@dataclass
class GatewayState:
    settings: Settings
    # The client itself, or wrapped in the Redis metadata cache (cache_lru).
    blobstore: BlobstoreAPI
    urls: URLBuilder
    signer: UploadStateSigner
    # Notifications: routes publish events here; ``events.stats()`` holds the per-endpoint counters.
    events: EventBus
    # Where /v1/search is forwarded.
    search: SearchClient
    # Who may do what; also decides which search results a caller sees.
    access: AccessController
    # The pull-through cache (proxy); None when nothing is mirrored.
    mirror: Mirror | None = None

    # Blob GETs try a redirect (storage_redirect) until the store shows its driver has no URLs.
    redirects: bool = False

    def __post_init__(self) -> None:
        self.redirects = self.settings.storage_redirect

    @property
    def deletes_enabled(self) -> bool:
        return self.settings.storage.delete.enabled


def of(request: Request) -> GatewayState:
    """The process's GatewayState, which the app's lifespan put on ``app.state``."""
    state: GatewayState = request.app.state.gateway
    return state
