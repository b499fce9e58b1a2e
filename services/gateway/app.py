"""The gateway application: the registry HTTP API over the blobstore."""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.config import Settings
from services.gateway import responses, routes
from services.gateway.blobstore_client import BlobstoreClient
from services.gateway.state import GatewayState
from services.gateway.upload_state import UploadStateSigner
from services.gateway.urls import URLBuilder

API_VERSION_HEADER = (b"docker-distribution-api-version", b"registry/2.0")


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


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = BlobstoreClient(settings.blobstore.connect_to)
        app.state.gateway = GatewayState(
            settings=settings,
            blobstore=client,
            urls=URLBuilder(settings.http),
            signer=UploadStateSigner(settings.http.secret),
        )
        try:
            yield
        finally:
            await client.close()

    app = FastAPI(
        title="Berth registry",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        redirect_slashes=False,
    )
    responses.install(app)
    app.include_router(routes.router(settings.http.prefix))
    app.add_middleware(APIVersionHeader, prefix=settings.http.prefix)
    return app
