"""Request ids and call metrics across the gateway -> blobstore hop, in one process: the id the
gateway's request carries is the blobstore's current id while it serves the call, and both sides
time every call."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from services.blobstore import server as blobstore_server
from services.common import request_ids
from services.common.config import Settings
from services.common.rpc import blobstore_pb2 as pb
from services.common.rpc import blobstore_pb2_grpc as pb_grpc
from services.gateway.blobstore_client import BlobstoreClient
from tests.support.processes import free_port

TOKEN = "a-token-of-sixteen-or-more"


@pytest.fixture()
def running(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Settings, list[str]]]:
    """A token-secured blobstore (inmemory) whose ListRepositories notes the current request id."""
    seen: list[str] = []
    original = blobstore_server.BlobstoreService.ListRepositories

    def noting(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        seen.append(request_ids.current())
        return original(self, request, context)

    monkeypatch.setattr(blobstore_server.BlobstoreService, "ListRepositories", noting)
    settings = Settings.model_validate(
        {
            "storage": {"driver": "inmemory"},
            "blobstore": {"addr": f"127.0.0.1:{free_port()}", "http_addr": "", "security": "token", "token": TOKEN},
        }
    )
    blobstore = blobstore_server.build(settings)
    blobstore.start()
    yield settings, seen
    blobstore.stop(grace=0)


def _count(side: str, method: str, code: str) -> float:
    labels = {"side": side, "method": method, "code": code}
    return REGISTRY.get_sample_value("berth_blobstore_rpc_duration_seconds_count", labels) or 0.0


def test_request_id_travels_and_calls_are_timed(running: tuple[Settings, list[str]]) -> None:
    settings, seen = running
    before = (_count("client", "ListRepositories", "OK"), _count("server", "ListRepositories", "OK"))

    async def calls() -> None:
        client = BlobstoreClient.from_settings(settings.blobstore)
        try:
            token = request_ids.set_current("req-123")
            await client.list_repositories("", 10)
            request_ids.reset(token)
            await client.list_repositories("", 10)  # no id: the blobstore makes one for the call
            token = request_ids.set_current("bad id\nforged=1")
            await client.list_repositories("", 10)
            request_ids.reset(token)
        finally:
            await client.close()

    asyncio.run(calls())
    # A caller other than our gateway may send an id the logs must not take as it is.
    with grpc.insecure_channel(settings.blobstore.addr) as channel:
        metadata = (("authorization", f"Bearer {TOKEN}"), (request_ids.METADATA_KEY, "two words"))
        pb_grpc.BlobstoreStub(channel).ListRepositories(pb.ListRepositoriesRequest(limit=1), metadata=metadata, timeout=10)
    assert seen[3] and " " not in seen[3]
    assert seen[0] == "req-123"
    assert seen[1] and seen[1] != "req-123"
    assert seen[2] and "\n" not in seen[2] and seen[2] != seen[1]
    assert _count("client", "ListRepositories", "OK") == before[0] + 3
    assert _count("server", "ListRepositories", "OK") == before[1] + 4


def test_streams_are_timed_with_their_status(running: tuple[Settings, list[str]]) -> None:
    settings, _ = running
    before = (_count("client", "ReadBlob", "NOT_FOUND"), _count("server", "ReadBlob", "NOT_FOUND"))

    async def read_missing() -> None:
        client = BlobstoreClient.from_settings(settings.blobstore)
        try:
            with pytest.raises(Exception, match="blob unknown"):
                await client.read_blob("some/repo", "sha256:" + "2" * 64)
        finally:
            await client.close()

    asyncio.run(read_missing())
    assert _count("client", "ReadBlob", "NOT_FOUND") == before[0] + 1
    assert _count("server", "ReadBlob", "NOT_FOUND") == before[1] + 1
