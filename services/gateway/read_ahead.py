"""Reading a byte source ahead of the stream that writes it to the blobstore.

A write to the blobstore waits for its flow control: the blobstore takes the next message only once
it has hashed and written the last. Read in the same coroutine, the source (a client's request
body, an upstream's response) would wait meanwhile, so the two legs would take turns. Read by a
task of its own, a few messages ahead, the source keeps arriving while the blobstore works: the
transfer goes as fast as the slower leg instead of the sum of both.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

# Messages read ahead: memory per transfer is this many messages (about 1 MiB each).
DEPTH = 4


@dataclass(frozen=True)
class _End:
    failure: BaseException | None = None


async def read_ahead(source: AsyncIterator[bytes], depth: int = DEPTH) -> AsyncIterator[bytes]:
    """What ``source`` yields, read up to ``depth`` items ahead; its failure is raised where the
    consumer would have met it. Closing this stops the reading."""
    queue: asyncio.Queue[bytes | _End] = asyncio.Queue(depth)

    async def fill() -> None:
        try:
            async for item in source:
                await queue.put(item)
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            await queue.put(_End(exc))
            return
        await queue.put(_End())

    reader = asyncio.ensure_future(fill())
    try:
        while True:
            item = await queue.get()
            if isinstance(item, _End):
                if item.failure is not None:
                    raise item.failure
                return
            yield item
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
