"""The blobstore client seam: BlobstoreAPI names every call of the gRPC client, each implementation
implements all of them, and ForwardingBlobstore passes each call on unchanged."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

from services.gateway.blobstore_api import BlobstoreAPI, ForwardingBlobstore
from services.gateway.blobstore_client import BlobstoreClient
from services.gateway.cache import CachedBlobstore

API = sorted(name for name, member in inspect.getmembers(BlobstoreAPI, inspect.iscoroutinefunction) if not name.startswith("_"))


def test_the_protocol_names_every_call_of_the_client() -> None:
    client_calls = {n for n, _ in inspect.getmembers(BlobstoreClient, inspect.iscoroutinefunction) if not n.startswith("_")}
    assert set(API) == client_calls
    assert len(API) >= 20


@pytest.mark.parametrize("implementation", [BlobstoreClient, ForwardingBlobstore, CachedBlobstore])
def test_every_implementation_implements_every_call(implementation: type) -> None:
    assert BlobstoreAPI in implementation.__mro__  # explicitly: mypy checks it is complete
    assert not inspect.isabstract(implementation), getattr(implementation, "__abstractmethods__", None)
    for name in API:
        assert getattr(implementation, name) is not getattr(BlobstoreAPI, name), name
        assert inspect.signature(getattr(implementation, name)) == inspect.signature(getattr(BlobstoreAPI, name)), name


class Recording:
    call_timeout = 12.5
    channel = object()

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            return ("answer", name)

        return call


@pytest.mark.parametrize("name", API)
def test_forwarding_passes_each_call_on_unchanged(name: str) -> None:
    client = Recording()
    forwarding = ForwardingBlobstore(client)  # type: ignore[arg-type]
    parameters = [p for p in inspect.signature(getattr(BlobstoreAPI, name)).parameters.values() if p.name != "self"]
    args = [f"arg-{p.name}" for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD]
    kwargs = {p.name: f"kw-{p.name}" for p in parameters if p.kind is p.KEYWORD_ONLY}
    answer = asyncio.run(getattr(forwarding, name)(*args, **kwargs))
    assert client.calls == [(name, tuple(args), kwargs)]
    if inspect.signature(getattr(BlobstoreAPI, name)).return_annotation != "None":
        assert answer == ("answer", name)
    assert forwarding.call_timeout == 12.5 and forwarding.channel is client.channel
