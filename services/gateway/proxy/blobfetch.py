"""One upstream download per blob, however many clients want it at once.

The first request for a blob the cache lacks starts a fetch: a task that reads the upstream's
response and writes it into a blobstore upload, committed against the digest in the same call, so
the blob is visible only once verified (like a push) and a download that fails part-way leaves
nothing behind (the blobstore discards a session its failed call opened). That first client
streams the bytes as they arrive, through a small bounded queue (the fetch goes as fast as the
slower of the client and the store); if it goes away, the fetch carries on storing. Requests that
arrive meanwhile wait for the fetch to end and read the stored blob.

A blob that fits in one message (``whole_limit``: the config, most small layers) is read whole and
its digest checked here; every client of the fetch waits for that and is handed the verified bytes
(or a 502), and the blob is stored after, by one short call: for such a blob the stream, the store's fsyncs and a
second read would cost more than its bytes. A fetch may also start with nobody listening (the
mirror's prefetch of an image's small blobs).

In-flight fetches are per gateway process. Replicas sharing Redis hold a lease while they fetch
(``fetch_leases.py``), so only one downloads; without it, gateways that race on the same blob each
download it, and the blobstore's atomic, digest-checked commit makes that harmless.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from services.common import digests
from services.common.metrics import MIRROR_UPSTREAM_BYTES
from services.gateway.proxy.fetch_leases import Lease
from services.gateway.proxy.upstream import Upstream, UpstreamError
from services.gateway.read_ahead import read_ahead

log = logging.getLogger("berth.gateway.proxy")

CHUNK = 1 << 20
QUEUE_CHUNKS = 4
_END = b""


@dataclass
class Fetch:
    size: asyncio.Future[int]
    # The clients' bytes are all there and verified (a streamed blob: once stored).
    done: asyncio.Future[None]
    # The blob is stored and can be read from the blobstore.
    stored: asyncio.Future[None]
    queue: asyncio.Queue[bytes] = field(default_factory=lambda: asyncio.Queue(QUEUE_CHUNKS))
    listening: bool = True
    task: asyncio.Task[None] | None = None
    # The whole blob once verified, for one read whole (at most whole_limit).
    body: bytes | None = None

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


@contextmanager
def _reading(upstream: Upstream, digest: str) -> Iterator[None]:
    """The upstream's failures while a blob's body arrives, as what waiting clients are told."""
    try:
        yield
    except httpx.TimeoutException:  # a 503
        raise UpstreamError("timeout", f"{upstream.url} stopped sending {digest}") from None
    except httpx.TransportError as exc:
        raise UpstreamError("unreachable", f"{upstream.url} broke off {digest} ({exc.__class__.__name__})") from None


class BlobFetches:
    def __init__(self, blobstore: Any, whole_limit: int) -> None:
        self.blobstore = blobstore
        self.whole_limit = whole_limit
        self.inflight: dict[tuple[str, str], Fetch] = {}

    def reads_whole(self, size: int) -> bool:
        """Whether a blob of ``size`` bytes (-1: not said) is read whole rather than streamed."""
        return 0 <= size <= self.whole_limit

    def running(self, name: str, digest: str) -> Fetch | None:
        return self.inflight.get((name, digest))

    def start(
        self,
        upstream: Upstream,
        name: str,
        digest: str,
        on_stored: Callable[[int], Any],
        *,
        listening: bool = True,
        lease: Lease | None = None,
    ) -> Fetch:
        """Starts the fetch of a blob (the caller checked none runs) and returns it; the fetch
        releases ``lease`` (fetch_leases.py) when it ends."""
        loop = asyncio.get_running_loop()
        fetch = Fetch(size=loop.create_future(), done=loop.create_future(), stored=loop.create_future(), listening=listening)
        key = (name, digest)
        self.inflight[key] = fetch
        fetch.task = asyncio.create_task(self._run(fetch, upstream, name, digest, on_stored, lease))
        fetch.task.add_done_callback(lambda _: self.inflight.pop(key, None))
        # Nobody may be waiting on these when the fetch fails: mark their exceptions retrieved.
        for future in (fetch.size, fetch.done, fetch.stored):
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
        return fetch

    async def _run(
        self, fetch: Fetch, upstream: Upstream, name: str, digest: str, on_stored: Callable[[int], Any], lease: Lease | None
    ) -> None:
        try:
            await self._fetch(fetch, upstream, name, digest, on_stored)
        finally:
            if lease is not None:
                await lease.release()

    async def _fetch(self, fetch: Fetch, upstream: Upstream, name: str, digest: str, on_stored: Callable[[int], Any]) -> None:
        label = upstream.label
        try:
            async with upstream.open_blob(name, digest) as response:
                declared = response.headers.get("content-length", "")
                size = int(declared) if declared.isdigit() else -1
                fetch.size.set_result(size)
                if self.reads_whole(size):
                    with _reading(upstream, digest):
                        body = await response.aread()
                    MIRROR_UPSTREAM_BYTES.labels(label).inc(len(body))
                else:
                    info = await self.blobstore.write_upload(
                        name,
                        "",
                        0,
                        read_ahead(self._streamed(fetch, upstream, response, digest)),
                        commit_digest=digest,
                        expected_length=size,
                    )
                    # One call opens, fills and commits the upload; one that fails or is cancelled
                    # part-way is discarded by the blobstore, so nothing is left to cancel here.
                    body = None
            if body is None:
                fetch.stored.set_result(None)
                fetch.done.set_result(None)
                if fetch.listening:
                    await fetch.queue.put(_END)
            else:
                # Checked here, so the clients have verified bytes at once; the blobstore checks
                # them again when it stores them, after the clients are answered.
                if digests.of(body, digests.parse(digest).algorithm) != digest:
                    raise UpstreamError("invalid", f"{upstream.url} sent a blob that does not hash to {digest}")
                fetch.body = body
                fetch.done.set_result(None)
                info = await self.blobstore.write_upload(name, "", 0, body, commit_digest=digest, expected_length=size)
                fetch.stored.set_result(None)
            await on_stored(info.size)  # after the clients are answered: it is only bookkeeping
        except BaseException as exc:
            failure = exc if isinstance(exc, Exception) else asyncio.CancelledError()
            for future in (fetch.size, fetch.done, fetch.stored):
                if not future.done():
                    future.set_exception(failure)
            if fetch.listening:  # wake the streaming client: its response fails
                fetch.stop_listening()
                fetch.queue.put_nowait(_END)
            if not isinstance(exc, Exception):
                raise
            log.warning("fetching %s@%s from %s failed: %s", name, digest, upstream.url, exc)

    @staticmethod
    async def _streamed(fetch: Fetch, upstream: Upstream, response: httpx.Response, digest: str) -> AsyncIterator[bytes]:
        """The body as it arrives, handed to the listening client on its way to the store."""
        with _reading(upstream, digest):
            async for chunk in response.aiter_bytes(CHUNK):
                MIRROR_UPSTREAM_BYTES.labels(upstream.label).inc(len(chunk))
                if fetch.listening:
                    await fetch.queue.put(chunk)
                yield chunk
