"""The gateway's readiness checks (``/_ready``; see ``services.common.health``).

- ``blobstore`` (critical): the standard gRPC health service answers SERVING. It is cheap (no
  storage access at the gateway's expense: a blobstore turns SERVING once its storage took a
  write, and its own /_ready keeps checking after that), needs no credentials, and a short deadline
  without wait-for-ready makes a stopped blobstore fail the probe at once rather than after
  ``blobstore.call_timeout``. A blobstore too old to have the health service (UNIMPLEMENTED) has
  answered all the same, which is what reachable means.
- ``search`` (only when the search service runs, ``search_backend`` set; not critical): the
  search service's own ``/_ready``. Its loss costs ``/v1/search`` only, so it must not take every
  gateway out of rotation at once; it shows in the body and in the log.

``/``, ``/_ping`` and ``/v1/_ping`` also answer as a standalone v1 registry (``V1_PING_HEADERS``),
which is what makes the docker daemon send its stored credentials along with ``docker search``.
"""

from __future__ import annotations

import grpc
import grpc.aio
import httpx
from fastapi import FastAPI
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common import health
from services.common.config import Settings

# Seconds per check: under the 3 s a probe's own timeout usually allows for the whole answer.
TIMEOUT = 1.5

# What a standalone v1 registry's /v1/_ping said (the classic registry's). The docker daemon pings
# /v1/_ping before `docker search` and sends the stored credentials (Basic) to /v1/search only when
# the registry says it is standalone, i.e. needs no separate index to log in at.
V1_PING_HEADERS = {
    "X-Docker-Registry-Standalone": "true",
    "X-Docker-Registry-Version": health.berth_version(),
}


def install(app: FastAPI, settings: Settings) -> None:
    """The health endpoints with the gateway's checks (they read ``app.state.gateway``, made by
    the lifespan, when a probe arrives)."""

    async def blobstore() -> None:
        await blobstore_serving(app.state.gateway.blobstore.channel, TIMEOUT)

    checks = [health.Check("blobstore", blobstore, timeout=TIMEOUT)]
    if settings.search_service:
        base = settings.search.base_url

        async def search() -> None:
            await http_ready(f"{base}/_ready", TIMEOUT)

        checks.append(health.Check("search", search, critical=False, timeout=TIMEOUT))
    # Read-only mode shows in /_ping: a registry refusing pushes is alive, and should say why.
    facts = {"readonly": True} if settings.storage.maintenance.readonly.enabled else {}
    health.install(
        app, "gateway", debug=settings.debug, checks=checks, prefix=settings.http.prefix, facts=facts, ping_headers=V1_PING_HEADERS
    )


async def blobstore_serving(channel: grpc.aio.Channel, timeout: float) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        reply = await stub.Check(  # type: ignore[attr-defined]  # the stubs leave out the methods a generated stub sets in __init__
            health_pb2.HealthCheckRequest(service=""), timeout=timeout, wait_for_ready=False
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() is grpc.StatusCode.UNIMPLEMENTED:
            return
        raise health.CheckFailed(f"gRPC {exc.code().name}") from None
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        raise health.CheckFailed(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def http_ready(url: str, timeout: float) -> None:
    async with httpx.AsyncClient(timeout=timeout) as client:
        response = await client.get(url)
    if response.status_code != 200:
        raise health.CheckFailed(f"answered {response.status_code}")
