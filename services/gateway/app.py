"""The gateway application: the registry HTTP API over the blobstore."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common import forwarded, http_instrumentation, search_security
from services.common.config import ConfigError, Settings
from services.common.memory import limit_malloc_arenas
from services.common.metrics import READONLY
from services.common.rpc import security as blobstore_security
from services.gateway import access, health_checks, readonly, responses, routes
from services.gateway.app_state import GatewayState
from services.gateway.blobstore_client import BlobstoreClient
from services.gateway.cache import CachedBlobstore, MetadataCache
from services.gateway.events import EventBus
from services.gateway.proxy import Mirror, refuse_mirrored_writes
from services.gateway.search_client import SearchClient
from services.gateway.upload_state import UploadStateSigner
from services.gateway.urls import URLBuilder

API_VERSION_HEADER = (b"docker-distribution-api-version", b"registry/2.0")
# RFC 9110's token: what a header name may be.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE = re.compile(r"[\r\n\x00]|[^\x00-\xff]")


class APIVersionHeader:
    """Adds ``Docker-Distribution-API-Version`` to every /v2 response, errors included.

    Plain ASGI rather than BaseHTTPMiddleware, so streamed bodies pass through untouched.
    """

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.v2 = f"{prefix}/v2"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.v2):
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), API_VERSION_HEADER]
            await send(message)

        await self.app(scope, receive, send_with_header)


class ConfiguredHeaders:
    """``http.headers`` (registry:2's option: HSTS, X-Content-Type-Options, ...) on every response,
    errors and health probes included. A header the route set itself wins, as it does in
    registry:2, where these are set before the handler runs.

    Plain ASGI, so streamed bodies pass through untouched.
    """

    def __init__(self, app: ASGIApp, lines: list[tuple[bytes, bytes]]) -> None:
        self.app = app
        self.lines = lines

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                own = list(message.get("headers", ()))
                present = {name.lower() for name, _ in own}
                message["headers"] = own + [line for line in self.lines if line[0] not in present]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def header_lines(headers: dict[str, list[str]]) -> list[tuple[bytes, bytes]]:
    """``http.headers`` as response header lines, one per value. ConfigError for what would break
    every response: a name that is no token, a value with a line break or beyond Latin-1."""
    lines = []
    for name, values in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise ConfigError(f"http.headers: {name!r} is not a valid header name")
        for value in values:
            if _BAD_VALUE.search(value):
                raise ConfigError(f"http.headers.{name}: {value!r} is not a valid header value")
            lines.append((name.lower().encode(), value.encode("latin-1")))
    return lines


def create_app(settings: Settings) -> FastAPI:
    limit_malloc_arenas()  # blob bodies pass through in 1 MiB chunks (services/common/memory.py)
    # A search service beyond loopback whose token for POST /events this gateway lacks stops it
    # here (ConfigError naming blobstore.token), as the search service itself stops.
    if settings.search_service:
        search_security.required_token(settings)
    # Built before serving: a bad auth configuration (unreadable key bundle) stops the gateway here.
    controller = access.create(settings.auth)
    # Likewise unreadable blobstore credentials (ConfigError naming the key), and bad http.headers.
    blobstore_security.channel_credentials(settings.blobstore)
    configured_headers = header_lines(settings.http.headers)
    read_only = settings.storage.maintenance.readonly.enabled
    READONLY.labels("gateway").set(1 if read_only else 0)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = BlobstoreClient.from_settings(settings.blobstore)
        cache = MetadataCache.from_settings(settings.cache_lru)  # None when cache_lru.host is empty
        events = EventBus.from_settings(settings)
        search = SearchClient.from_settings(settings)
        blobstore = CachedBlobstore(client, cache) if cache else client
        mirror = Mirror.from_settings(settings, blobstore)
        app.state.gateway = GatewayState(
            settings=settings,
            blobstore=blobstore,
            urls=URLBuilder(settings.http),
            signer=UploadStateSigner(settings.http.secret),
            events=events,
            search=search,
            access=controller,
            mirror=mirror,
        )
        await events.start()
        try:
            yield
        finally:
            # Bounded: what the endpoints do not take within the grace period is lost (and logged).
            await events.aclose()
            await search.aclose()
            if mirror is not None:
                await mirror.aclose()
            await client.close()
            if cache:
                await cache.aclose()
            await controller.aclose()

    app = FastAPI(
        title="Berth registry",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        redirect_slashes=False,
    )
    responses.install(app)
    forwarded.install(app, settings.http)
    health_checks.install(app, settings)  # /, /_ping, /_ready: before the registry's routes, so they win
    # /v1/search never asks for credentials (rule IF_SENT) but verifies any sent, so
    # request.state.identity can filter its results. In read-only mode writes are refused first:
    # no credentials asked for what cannot be done anyway, no work started.
    checks = [Depends(access.dependency(controller, settings.http.prefix))]
    if settings.proxy.enabled:  # pushes under a mirrored prefix: 405, before credentials are asked
        checks.insert(0, Depends(refuse_mirrored_writes))
    if read_only:
        checks.insert(0, Depends(readonly.refuse_writes))
    routes.install(app, settings.http.prefix, dependencies=checks)
    http_instrumentation.install(app, "gateway", settings)
    # Outermost, around http_instrumentation's layers and Starlette's own error layer, so a 500 for an
    # unhandled error carries these headers too (add_middleware would put them inside that layer).
    build_inner = app.build_middleware_stack

    def build_outer() -> ASGIApp:
        outer: ASGIApp = APIVersionHeader(build_inner(), prefix=settings.http.prefix)
        return ConfiguredHeaders(outer, configured_headers) if configured_headers else outer

    app.build_middleware_stack = build_outer  # type: ignore[method-assign]
    return app
