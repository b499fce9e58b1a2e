"""read_ahead (services/gateway/read_ahead.py): the source is read a bounded number of items
ahead of its consumer, in order, its failure reaches the consumer, and closing the consumer stops
the source."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from services.gateway.read_ahead import read_ahead


class Source:
    def __init__(self, items: int, fail_at: int | None = None) -> None:
        self.items, self.fail_at = items, fail_at
        self.read = 0
        self.closed = False

    async def __call__(self) -> AsyncIterator[bytes]:
        try:
            for n in range(self.items):
                if n == self.fail_at:
                    raise ConnectionResetError("the client went away")
                self.read += 1
                yield bytes([n])
                await asyncio.sleep(0)
        finally:
            self.closed = True


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


def test_items_come_in_order_read_at_most_depth_ahead() -> None:
    async def scenario() -> None:
        source = Source(20)
        ahead = read_ahead(source(), depth=3)
        assert await ahead.__anext__() == b"\x00"
        await settle()  # the consumer is busy elsewhere: the source goes on, but not unboundedly
        assert 1 + 3 <= source.read <= 1 + 3 + 1
        rest = [item async for item in ahead]
        assert rest == [bytes([n]) for n in range(1, 20)]
        assert source.closed

    asyncio.run(scenario())


def test_a_failure_of_the_source_reaches_the_consumer_after_what_came_before() -> None:
    async def scenario() -> None:
        got = []
        with pytest.raises(ConnectionResetError):
            async for item in read_ahead(Source(10, fail_at=5)(), depth=2):
                got.append(item)
        assert got == [bytes([n]) for n in range(5)]

    asyncio.run(scenario())


def test_closing_the_consumer_stops_the_source() -> None:
    async def scenario() -> None:
        source = Source(1000)
        ahead = read_ahead(source(), depth=2)
        await ahead.__anext__()
        await ahead.aclose()
        await settle()
        assert source.closed and source.read < 10

    asyncio.run(scenario())
