"""One upstream download per blob, however many clients want it at once.

The first request for a blob the cache lacks starts a fetch: a task that reads the upstream's
response and writes it into a blobstore upload, committed against the digest in the same call, so
the blob is visible only once verified (like a push) and a download that fails part-way leaves
nothing behind (the blobstore discards a session its failed call opened). That first client streams the bytes as they arrive, through a
small bounded queue (the fetch goes as fast as the slower of the client and the store); if it goes
away, the fetch carries on storing. Requests that arrive meanwhile wait for the fetch to end and
read the stored blob.

In-flight fetches are per gateway process; gateways that race on the same blob each download it,
and the blobstore's atomic, digest-checked commit makes that harmless.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from services.common.metrics import MIRROR_UPSTREAM_BYTES
from services.gateway.proxy.upstream import Upstream, UpstreamError

log = logging.getLogger("berth.gateway.proxy")

CHUNK = 1 << 20
QUEUE_CHUNKS = 4
_END = b""


@dataclass
class Fetch:
    size: asyncio.Future[int]
    done: asyncio.Future[None]
    queue: asyncio.Queue[bytes] = field(default_factory=lambda: asyncio.Queue(QUEUE_CHUNKS))
    listening: bool = True
    task: asyncio.Task[None] | None = None

    def stop_listening(self) -> None:
        self.listening = False
        while not self.queue.empty():
            self.queue.get_nowait()

    async def follow(self) -> AsyncIterator[bytes]:
        """The bytes as they arrive; raises at the end if the blob could not be stored."""
        try:
            while True:
                chunk = await self.queue.get()
                if chunk is _END:
                    break
                yield chunk
            await asyncio.shield(self.done)
        finally:
            self.stop_listening()


class BlobFetches:
    def __init__(self, blobstore: Any) -> None:
        self.blobstore = blobstore
        self.inflight: dict[tuple[str, str], Fetch] = {}

    def running(self, name: str, digest: str) -> Fetch | None:
        return self.inflight.get((name, digest))

    def start(self, upstream: Upstream, name: str, digest: str, on_stored: Callable[[int], Any]) -> Fetch:
        """Starts the fetch of a blob (the caller checked none runs) and returns it."""
        loop = asyncio.get_running_loop()
        fetch = Fetch(size=loop.create_future(), done=loop.create_future())
        key = (name, digest)
        self.inflight[key] = fetch
        fetch.task = asyncio.create_task(self._run(fetch, upstream, name, digest, on_stored))
        fetch.task.add_done_callback(lambda _: self.inflight.pop(key, None))
        # Nobody may be waiting on these when the fetch fails: mark their exceptions retrieved.
        fetch.size.add_done_callback(lambda f: f.cancelled() or f.exception())
        fetch.done.add_done_callback(lambda f: f.cancelled() or f.exception())
        return fetch

    async def _run(self, fetch: Fetch, upstream: Upstream, name: str, digest: str, on_stored: Callable[[int], Any]) -> None:
        label = upstream.label
        try:
            async with upstream.open_blob(name, digest) as response:
                declared = response.headers.get("content-length", "")
                size = int(declared) if declared.isdigit() else -1
                fetch.size.set_result(size)

                async def data() -> AsyncIterator[bytes]:
                    try:
                        async for chunk in response.aiter_bytes(CHUNK):
                            MIRROR_UPSTREAM_BYTES.labels(label).inc(len(chunk))
                            if fetch.listening:
                                await fetch.queue.put(chunk)
                            yield chunk
                    except httpx.TimeoutException:  # what the waiting clients are told: a 503
                        raise UpstreamError("timeout", f"{upstream.url} stopped sending {digest}") from None
                    except httpx.TransportError as exc:
                        raise UpstreamError("unreachable", f"{upstream.url} broke off {digest} ({exc.__class__.__name__})") from None

                # One call opens, fills and commits the upload; one that fails or is cancelled
                # part-way is discarded by the blobstore, so nothing is left to cancel here.
                info = await self.blobstore.write_upload(name, "", 0, data(), commit_digest=digest, expected_length=size)
            fetch.done.set_result(None)
            if fetch.listening:
                await fetch.queue.put(_END)
            await on_stored(info.size)  # after the clients are answered: it is only bookkeeping
        except BaseException as exc:
            if not fetch.size.done():
                fetch.size.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
            if not fetch.done.done():
                fetch.done.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
            if fetch.listening:  # wake the streaming client: its response fails
                fetch.stop_listening()
                fetch.queue.put_nowait(_END)
            if not isinstance(exc, Exception):
                raise
            log.warning("fetching %s@%s from %s failed: %s", name, digest, upstream.url, exc)
