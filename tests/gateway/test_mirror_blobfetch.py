"""One upstream download per blob (services/gateway/proxy/blobfetch.py, through Mirror.fetch_blob):
the first client streams while the blob is stored, clients arriving meanwhile wait and read the
stored blob, and a download that fails part-way leaves nothing visible. The upstream is httpx's
MockTransport with a body the test releases piece by piece; the blobstore a fake that keeps
uploads and blobs apart and verifies the digest at commit, as the real one does."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from services.common.config.schema import ProxySettings
from services.common.errors import BLOB_UNKNOWN, DIGEST_INVALID, MANIFEST_UNKNOWN, RegistryError
from services.gateway.proxy import PREFETCH_BUSY, Mirror
from services.gateway.proxy.upstream import UpstreamError

NAME = "hub/team/app"
PIECES = [bytes([n]) * 300_000 for n in range(8)]
BLOB = b"".join(PIECES)
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
# Blobs up to this size are fetched whole (BLOB is larger: streamed).
WHOLE_LIMIT = 1 << 20


class FakeStore:
    """Uploads are invisible until committed against a matching digest."""

    def __init__(self) -> None:
        self.uploads: dict[str, bytearray] = {}
        self.blobs: dict[tuple[str, str], bytes] = {}
        self.touched: list[Any] = []
        self.writes: list[str] = []
        self.manifests: list[Any] = []

    async def stat_blob(self, name: str, digest: str) -> Any:
        if (name, digest) not in self.blobs:
            raise RegistryError(BLOB_UNKNOWN, {"digest": digest})
        return SimpleNamespace(digest=digest, size=len(self.blobs[(name, digest)]))

    async def get_manifest(self, name: str, reference: str) -> Any:
        raise RegistryError(MANIFEST_UNKNOWN, {"reference": reference})

    async def put_manifest(self, request: Any) -> Any:
        self.manifests.append(request)

    async def start_upload(self, name: str) -> Any:
        upload_id = uuid.uuid4().hex
        self.uploads[upload_id] = bytearray()
        return SimpleNamespace(upload_id=upload_id)

    async def write_upload(
        self, name: str, upload_id: str, offset: int, data: AsyncIterator[bytes] | bytes, *, commit_digest: str, expected_length: int
    ) -> Any:
        self.writes.append("whole" if isinstance(data, bytes) else "stream")
        created = not upload_id
        if created:  # as the blobstore does: a session of the call's own, gone if the call fails
            upload_id = (await self.start_upload(name)).upload_id
        buf = self.uploads[upload_id]
        try:
            if isinstance(data, bytes):
                buf += data
            else:
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
    m = Mirror(ProxySettings(upstreams=[{"prefix": "hub/", "remoteurl": "http://upstream.test"}]), store, 1 << 20, WHOLE_LIMIT)
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
    """Streamed: the first client's response breaks off. Read whole (small): no client gets a byte,
    every one hears 502 at once."""

    async def scenario(body: list[bytes]) -> None:
        store, upstream = FakeStore(), Upstream(body=body)
        m = mirror(store, upstream)
        up = m.upstreams[0]
        if sum(map(len, body)) > WHOLE_LIMIT:
            first = await m.fetch_blob(up, NAME, DIGEST)
            assert first is not None
            waiter = asyncio.ensure_future(m.fetch_blob(up, NAME, DIGEST))
            upstream.release(len(body))
            with pytest.raises(RegistryError):
                await drain(first[1])
        else:
            starting = asyncio.ensure_future(m.fetch_blob(up, NAME, DIGEST))
            await settle()
            waiter = asyncio.ensure_future(m.fetch_blob(up, NAME, DIGEST))
            upstream.release(len(body))
            with pytest.raises(RegistryError) as refused:
                await starting
            assert refused.value.status == 502
        with pytest.raises(RegistryError) as joined:
            await waiter
        assert joined.value.status == 502  # the upstream's fault
        assert not store.blobs and not store.uploads
        await m.aclose()

    asyncio.run(scenario(PIECES[::-1]))
    asyncio.run(scenario([b"not", b"the", b"blob"]))


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


def test_a_small_blob_is_fetched_whole_stored_in_one_call_and_handed_to_every_client() -> None:
    async def scenario() -> None:
        pieces = [b"small ", b"blob"]
        blob = b"".join(pieces)
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        store, upstream = FakeStore(), Upstream(body=pieces)
        m = mirror(store, upstream)
        up = m.upstreams[0]
        clients = [asyncio.ensure_future(m.fetch_blob(up, NAME, digest)) for _ in range(4)]
        upstream.release(1)
        await settle()
        assert not any(c.done() for c in clients)  # nobody answered before the whole blob is there
        upstream.release(1)
        for answer in await asyncio.gather(*clients):  # the bytes themselves: no read from the store
            assert answer is not None and answer[0] == len(blob) and await drain(answer[1]) == blob
        await settle()
        assert store.blobs[(NAME, digest)] == blob and store.writes == ["whole"] and upstream.gets == 1
        await m.aclose()

    asyncio.run(scenario())


def test_an_image_fetched_cold_starts_fetching_its_small_blobs_before_they_are_asked_for() -> None:
    """The manifest's config and small layer are fetched and stored with no client asking; the
    layer larger than one message, and a blob the store holds already, are not."""
    config, layer, big, held = b'{"config": 1}', b"small layer", b"L" * (WHOLE_LIMIT + 1), b"held layer"
    sha = lambda data: "sha256:" + hashlib.sha256(data).hexdigest()  # noqa: E731
    blobs = {sha(b): b for b in (config, layer, big, held)}
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config), "size": len(config)},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(b), "size": len(b)} for b in (layer, big, held)
            ],
        }
    ).encode()
    asked: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if "/manifests/" in request.url.path:
            return httpx.Response(200, headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}, content=manifest)
        return httpx.Response(200, content=blobs[request.url.path.rsplit("/", 1)[1]])

    async def scenario(busy: int) -> None:
        asked.clear()
        store = FakeStore()
        store.blobs[(NAME, sha(held))] = held
        m = Mirror(ProxySettings(upstreams=[{"prefix": "hub/", "remoteurl": "http://upstream.test"}]), store, 1 << 20, WHOLE_LIMIT)
        up = m.upstreams[0]
        up.client = httpx.AsyncClient(base_url=up.url, transport=httpx.MockTransport(handler))
        for n in range(busy):  # fetches of other blobs under way in this gateway
            m.fetches.inflight[("other/repo", f"sha256:{n:064x}")] = SimpleNamespace()
        await m.get_manifest(up, NAME, sha(manifest))
        if busy:
            await settle()
            assert asked == [f"/v2/team/app/manifests/{sha(manifest)}"]  # nothing fetched ahead
            assert (NAME, sha(config)) not in store.blobs
            await m.aclose()
            return
        for _ in range(100):
            if (NAME, sha(layer)) in store.blobs and (NAME, sha(config)) in store.blobs and not m.fetches.inflight:
                break
            await asyncio.sleep(0.01)
        assert store.blobs[(NAME, sha(config))] == config and store.blobs[(NAME, sha(layer))] == layer
        assert (NAME, sha(big)) not in store.blobs
        assert sorted(asked) == sorted(
            f"/v2/team/app/{kind}/{d}" for kind, d in [("manifests", sha(manifest)), ("blobs", sha(config)), ("blobs", sha(layer))]
        )
        await m.aclose()

    asyncio.run(scenario(busy=0))
    asyncio.run(scenario(busy=PREFETCH_BUSY))  # a gateway fetching this much already fetches nothing ahead
