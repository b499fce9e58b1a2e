"""One upstream download per blob (services/gateway/proxy/blobfetch.py, through Mirror.fetch_blob):
the first client streams while the blob is stored, clients arriving meanwhile wait and read the
stored blob, and a download that fails part-way leaves nothing visible. The upstream is httpx's
MockTransport with a body the test releases piece by piece; the blobstore a fake that keeps
uploads and blobs apart and verifies the digest at commit, as the real one does."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from services.common.config.schema import ProxySettings
from services.common.errors import DIGEST_INVALID, RegistryError
from services.gateway.proxy import Mirror
from services.gateway.proxy.upstream import UpstreamError

NAME = "hub/team/app"
PIECES = [bytes([n]) * 300_000 for n in range(8)]
BLOB = b"".join(PIECES)
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()


class FakeStore:
    """Uploads are invisible until committed against a matching digest."""

    def __init__(self) -> None:
        self.uploads: dict[str, bytearray] = {}
        self.blobs: dict[tuple[str, str], bytes] = {}
        self.touched: list[Any] = []

    async def start_upload(self, name: str) -> Any:
        upload_id = uuid.uuid4().hex
        self.uploads[upload_id] = bytearray()
        return SimpleNamespace(upload_id=upload_id)

    async def write_upload(
        self, name: str, upload_id: str, offset: int, data: AsyncIterator[bytes], *, commit_digest: str, expected_length: int
    ) -> Any:
        created = not upload_id
        if created:  # as the blobstore does: a session of the call's own, gone if the call fails
            upload_id = (await self.start_upload(name)).upload_id
        buf = self.uploads[upload_id]
        try:
            async for chunk in data:
                buf += chunk
        except BaseException:
            if created:
                self.uploads.pop(upload_id, None)
            raise
        if "sha256:" + hashlib.sha256(buf).hexdigest() != commit_digest:
            del self.uploads[upload_id]
            raise RegistryError(DIGEST_INVALID, {"digest": commit_digest})
        self.blobs[(name, commit_digest)] = bytes(buf)
        del self.uploads[upload_id]
        return SimpleNamespace(size=len(buf))

    async def touch_mirror(self, request: Any) -> None:
        self.touched.append(request)


class Upstream:
    """Serves BLOB (or ``body``) one piece per ``release()``; ``fail_after`` pieces then breaks off."""

    def __init__(self, body: list[bytes] = PIECES, fail_after: int | None = None) -> None:
        self.body = body
        self.fail_after = fail_after
        self.gets = 0
        self.gate = asyncio.Semaphore(0)

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self.gate.release()

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.gets += 1

        async def stream() -> AsyncIterator[bytes]:
            for n, piece in enumerate(self.body):
                if self.fail_after is not None and n == self.fail_after:
                    raise httpx.ReadError("connection reset by peer")
                await self.gate.acquire()
                yield piece

        return httpx.Response(200, headers={"Content-Length": str(sum(map(len, self.body)))}, content=stream())


def mirror(store: FakeStore, upstream: Upstream) -> Mirror:
    m = Mirror(ProxySettings(upstreams=[{"prefix": "hub/", "remoteurl": "http://upstream.test"}]), store, 1 << 20)
    up = m.upstreams[0]
    up.client = httpx.AsyncClient(base_url=up.url, transport=httpx.MockTransport(upstream.handler))
    return m


async def drain(chunks: AsyncIterator[bytes]) -> bytes:
    out = bytearray()
    async for chunk in chunks:
        out += chunk
    return bytes(out)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_concurrent_clients_cause_one_download_the_first_streams_the_others_wait() -> None:
    async def scenario() -> None:
        store, upstream = FakeStore(), Upstream()
        m = mirror(store, upstream)
        up = m.upstreams[0]
        first = await m.fetch_blob(up, NAME, DIGEST)
        assert first is not None
        size, chunks = first
        assert size == len(BLOB)
        reading = asyncio.ensure_future(drain(chunks))
        waiters = [asyncio.ensure_future(m.fetch_blob(up, NAME, DIGEST)) for _ in range(5)]
        upstream.release(3)
        await settle()
        assert not any(w.done() for w in waiters)  # nothing to read before the blob is stored
        assert (NAME, DIGEST) not in store.blobs  # and nothing visible part-way
        upstream.release(len(PIECES))
        assert await reading == BLOB  # the first client got the bytes as they came
        assert await asyncio.gather(*waiters) == [None] * 5  # the others: read the stored blob
        assert store.blobs[(NAME, DIGEST)] == BLOB
        assert upstream.gets == 1
        await settle()
        assert any(DIGEST in t.blobs for t in store.touched)  # the pull is recorded
        assert not m.fetches.inflight
        await m.aclose()

    asyncio.run(scenario())


def test_a_download_failing_part_way_leaves_nothing_and_every_client_hears_of_it() -> None:
    async def scenario() -> None:
        store, upstream = FakeStore(), Upstream(fail_after=4)
        m = mirror(store, upstream)
        up = m.upstreams[0]
        first = await m.fetch_blob(up, NAME, DIGEST)
        assert first is not None
        reading = asyncio.ensure_future(drain(first[1]))
        waiter = asyncio.ensure_future(m.fetch_blob(up, NAME, DIGEST))
        upstream.release(len(PIECES))
        with pytest.raises(UpstreamError):  # the streaming client's response breaks off
            await reading
        with pytest.raises(RegistryError) as joined:
            await waiter
        assert joined.value.status in (502, 503)
        assert not store.blobs and not store.uploads  # nothing left behind
        assert not m.fetches.inflight
        # The next pull tries again.
        upstream.fail_after = None
        again = await m.fetch_blob(up, NAME, DIGEST)
        assert again is not None
        upstream.release(len(PIECES))
        assert await drain(again[1]) == BLOB and store.blobs[(NAME, DIGEST)] == BLOB
        assert upstream.gets == 2
        await m.aclose()

    asyncio.run(scenario())


def test_content_that_does_not_match_its_digest_is_never_visible() -> None:
    async def scenario() -> None:
        store, upstream = FakeStore(), Upstream(body=[b"not", b"the", b"blob"])
        m = mirror(store, upstream)
        up = m.upstreams[0]
        first = await m.fetch_blob(up, NAME, DIGEST)
        assert first is not None
        waiter = asyncio.ensure_future(m.fetch_blob(up, NAME, DIGEST))
        upstream.release(3)
        with pytest.raises(RegistryError):
            await drain(first[1])
        with pytest.raises(RegistryError) as joined:
            await waiter
        assert joined.value.status == 502  # the upstream's fault
        assert not store.blobs and not store.uploads
        await m.aclose()

    asyncio.run(scenario())


def test_the_blob_is_stored_when_the_first_client_goes_away() -> None:
    async def scenario() -> None:
        store, upstream = FakeStore(), Upstream()
        m = mirror(store, upstream)
        up = m.upstreams[0]
        first = await m.fetch_blob(up, NAME, DIGEST)
        assert first is not None
        chunks = first[1]
        upstream.release(4)  # the fetch hands on 1 MiB pieces
        got = await chunks.__anext__()
        assert got and BLOB.startswith(got)
        await chunks.aclose()  # the client hung up
        upstream.release(len(PIECES) - 4)
        waiter = await m.fetch_blob(up, NAME, DIGEST)  # joins the running fetch, or finds it done
        assert waiter is None or (NAME, DIGEST) in store.blobs
        for _ in range(100):
            if (NAME, DIGEST) in store.blobs:
                break
            await asyncio.sleep(0.01)
        assert store.blobs[(NAME, DIGEST)] == BLOB and upstream.gets == 1
        await m.aclose()

    asyncio.run(scenario())


def test_a_ranged_read_waits_for_the_stored_blob() -> None:
    async def scenario() -> None:
        store, upstream = FakeStore(), Upstream()
        m = mirror(store, upstream)
        up = m.upstreams[0]
        ranged = asyncio.ensure_future(m.fetch_blob(up, NAME, DIGEST, follow=False))
        await settle()
        assert not ranged.done()
        upstream.release(len(PIECES))
        assert await ranged is None
        assert store.blobs[(NAME, DIGEST)] == BLOB
        await m.aclose()

    asyncio.run(scenario())
