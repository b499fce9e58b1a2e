"""The description reader never fails the search service on what an event or a pushed image holds."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from services.search.describe import Describer, FetchError


@pytest.mark.parametrize("url", ["http://registry:abc/v2/x/manifests/v1", "http://[::1/v2/x", "not a url at all"])
def test_a_target_url_that_is_no_url_is_a_fetch_error(url: str) -> None:
    async def fetch() -> None:
        async with httpx.AsyncClient() as client:
            await Describer(client).fetch(url)

    with pytest.raises(FetchError):
        asyncio.run(fetch())


def test_a_deeply_nested_document_is_a_fetch_error() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=deep))

    async def fetch() -> None:
        async with httpx.AsyncClient(transport=transport) as client:
            await Describer(client).fetch("http://registry.test/v2/x/blobs/sha256:0")

    with pytest.raises(FetchError):
        asyncio.run(fetch())
