"""What only the S3 driver has: multipart uploads that outlive their writer and process, server-side
copies, encryption, presigned URLs, and the number of requests each operation costs.

The shared driver suite (test_drivers.py) covers the interface; these run against the session's
moto server too, a bucket per test.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from services.blobstore.drivers import PathNotFound, StorageDriver, StorageError, create
from services.common import config
from tests.support.s3 import MotoServer

MiB = 1 << 20


@pytest.fixture()
def bucket(moto: MotoServer) -> str:
    return moto.new_bucket("s3-driver")


@pytest.fixture()
def make(moto: MotoServer, bucket: str) -> Callable[..., Any]:
    """Builds a driver on the test's bucket: each call is another "replica" with its own client."""

    def build(**overrides: Any) -> Any:
        return create("s3", moto.driver_parameters(bucket, chunksize=5 * MiB, **overrides))

    return build


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def uploads_in_progress(moto: MotoServer, bucket: str) -> list[str]:
    return [u["Key"] for u in moto.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def keys(moto: MotoServer, bucket: str) -> list[str]:
    return [o["Key"] for o in moto.client().list_objects_v2(Bucket=bucket).get("Contents", [])]


class Requests:
    """Counts the requests a driver sends, by operation."""

    def __init__(self, driver: Any) -> None:
        self.seen: collections.Counter[str] = collections.Counter()
        driver.client.meta.events.register("before-send.s3", self._count)

    def _count(self, event_name: str, **_: Any) -> None:
        self.seen[event_name.rsplit(".", 1)[-1]] += 1

    def during(self, action: Callable[[], object]) -> dict[str, int]:
        self.seen.clear()
        try:
            action()
        except PathNotFound:
            pass
        return dict(self.seen)


# --- appends across writers, processes and replicas ------------------------------------------


def test_large_upload_appended_by_two_replicas_is_moved_whole(make: Callable[..., Any], moto: MotoServer, bucket: str) -> None:
    replicas = [make(), make()]
    data = payload(12 * MiB + 12345)
    cuts = [0, 1 * MiB, 4 * MiB + 7, 6 * MiB, 11 * MiB + 1, 12 * MiB, len(data)]
    path = "/repositories/r/_uploads/u1/data"
    for index, (start, end) in enumerate(itertools.pairwise(cuts)):
        here, there = replicas[index % 2], replicas[(index + 1) % 2]
        writer = here.writer(path, append=True)
        assert writer.size == start
        for at in range(start, end, MiB):
            writer.write(data[at : min(end, at + MiB)])
        writer.commit()
        assert there.stat(path).size == end

    # Still one multipart upload, holding every full part so far; the rest waits in the marker.
    assert uploads_in_progress(moto, bucket) == [path.lstrip("/")]
    replicas[1].move(path, "/blobs/sha256/ab/abcd/data")
    assert uploads_in_progress(moto, bucket) == []
    with pytest.raises(PathNotFound):
        replicas[0].stat(path)

    back = bytearray()
    with replicas[0].reader("/blobs/sha256/ab/abcd/data") as stream:
        while block := stream.read(MiB):
            back += block
    assert sha256(bytes(back)) == sha256(data)
    assert replicas[0].stat("/blobs/sha256/ab/abcd/data").size == len(data)


def test_cancel_leaves_no_upload_and_no_object(make: Callable[..., Any], moto: MotoServer, bucket: str) -> None:
    first, second = make(), make()
    writer = first.writer("/uploads/u/data")
    writer.write(payload(11 * MiB))
    writer.commit()
    assert uploads_in_progress(moto, bucket)
    writer = second.writer("/uploads/u/data", append=True)
    writer.write(payload(6 * MiB, seed=1))
    writer.cancel()

    assert uploads_in_progress(moto, bucket) == []
    assert keys(moto, bucket) == []
    with pytest.raises(PathNotFound):
        first.stat("/uploads/u/data")


def test_deleting_a_directory_aborts_the_uploads_below_it(make: Callable[..., Any], moto: MotoServer, bucket: str) -> None:
    driver = make()
    for name in ("a", "b"):
        with driver.writer(f"/uploads/{name}/data") as writer:
            writer.write(payload(7 * MiB))
        driver.put_content(f"/uploads/{name}/startedat", b"1")
    driver.put_content("/kept", b"x")
    assert len(uploads_in_progress(moto, bucket)) == 2

    driver.delete("/uploads/a")
    assert uploads_in_progress(moto, bucket) == ["uploads/b/data"]
    driver.delete("/uploads")
    assert uploads_in_progress(moto, bucket) == []
    assert keys(moto, bucket) == ["kept"]


@pytest.mark.parametrize("first_size", [7 * MiB, 3 * MiB], ids=["copied-by-the-store", "read-back"])
def test_append_after_a_read_completed_the_upload(make: Callable[..., Any], first_size: int) -> None:
    driver = make()
    counted = Requests(driver)
    first, more = payload(first_size), payload(2 * MiB + 5, seed=2)
    with driver.writer("/u/data") as writer:
        writer.write(first)
    assert driver.get_content("/u/data") == first  # completes the upload into a plain object

    def append() -> None:
        with driver.writer("/u/data", append=True) as writer:
            assert writer.size == first_size
            writer.write(more)

    seen = counted.during(append)
    assert ("UploadPartCopy" in seen) == (first_size >= 5 * MiB)
    assert driver.stat("/u/data").size == first_size + len(more)
    assert sha256(driver.get_content("/u/data")) == sha256(first + more)


def test_reader_at_an_offset_of_a_path_still_being_written(make: Callable[..., Any]) -> None:
    driver = make()
    data = payload(7 * MiB + 3)
    with driver.writer("/u/data") as writer:
        writer.write(data)
    with driver.reader("/u/data", 6 * MiB) as stream:
        assert stream.read() == data[6 * MiB :]
    with driver.reader("/u/data", len(data)) as stream:
        assert stream.read() == b""


def test_parts_go_out_concurrently_but_no_more_than_configured(make: Callable[..., Any]) -> None:
    driver = make(uploadconcurrency=2)
    active = peak = 0
    lock = threading.Lock()

    def sending(**_: Any) -> None:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.2)  # a slow store: parts pile up unless the writer waits

    def sent(**_: Any) -> None:
        nonlocal active
        with lock:
            active -= 1

    driver.client.meta.events.register("before-send.s3.UploadPart", sending)
    driver.client.meta.events.register("after-call.s3.UploadPart", sent)
    data = payload(30 * MiB)
    writer = driver.writer("/u/data")
    for at in range(0, len(data), MiB):
        writer.write(data[at : at + MiB])
        assert len(writer._buffer) < 5 * MiB  # full parts left the buffer
        assert len(writer._inflight) <= 2
    writer.commit()
    assert peak == 2
    assert sha256(driver.get_content("/u/data")) == sha256(data)


# --- copies, encryption, URLs, configuration -------------------------------------------------


def test_move_above_the_threshold_copies_part_by_part_on_the_store(make: Callable[..., Any]) -> None:
    driver = make(multipartcopythresholdsize=5 * MiB, multipartcopychunksize=5 * MiB)
    data = payload(12 * MiB)
    driver.put_content("/src", data)
    seen = Requests(driver).during(lambda: driver.move("/src", "/dst"))
    assert seen.get("UploadPartCopy") == 3
    assert seen.get("HeadObject") == 1  # ours: the managed copy is told size and ETag
    assert "GetObject" not in seen and "UploadPart" not in seen
    assert sha256(driver.get_content("/dst")) == sha256(data)


@pytest.mark.parametrize("keyid", ["", "arn:aws:kms:us-east-1:123456789012:key/berth-test"], ids=["sse-s3", "sse-kms"])
def test_encryption_applies_to_every_way_of_writing(make: Callable[..., Any], moto: MotoServer, bucket: str, keyid: str) -> None:
    driver = make(encrypt=True, keyid=keyid)
    driver.put_content("/put", b"small")
    with driver.writer("/parts") as writer:
        writer.write(payload(11 * MiB))
    driver.move("/parts", "/moved")
    with driver.writer("/marker") as writer:
        writer.write(payload(6 * MiB))
    for key in ("put", "moved", "marker"):
        head = moto.client().head_object(Bucket=bucket, Key=key)
        assert head["ServerSideEncryption"] == ("aws:kms" if keyid else "AES256"), key
        if keyid:
            assert head["SSEKMSKeyId"].endswith("berth-test"), key


def test_redirect_url_is_a_presigned_read_of_the_object(make: Callable[..., Any], moto: MotoServer) -> None:
    driver = make(redirectexpiry=120, rootdirectory="prefix")
    driver.put_content("/blob", b"signed content")
    url = driver.redirect_url("/blob", "GET")
    assert url.startswith(f"{moto.endpoint}/") and "/prefix/blob?" in url
    assert "X-Amz-Expires=120" in url
    assert httpx.get(url).content == b"signed content"
    assert httpx.head(driver.redirect_url("/blob", "HEAD")).headers["Content-Length"] == "14"


def test_rootdirectory_keeps_every_key_under_its_prefix(make: Callable[..., Any], moto: MotoServer, bucket: str) -> None:
    moto.client().put_object(Bucket=bucket, Key="outside", Body=b"not ours")
    driver = make(rootdirectory="/deep/root/")
    driver.put_content("/a/b", b"x")
    assert driver.list("/") == ["/a"]
    assert sorted(keys(moto, bucket)) == ["deep/root/a/b", "outside"]


def test_driver_from_configuration(moto: MotoServer, bucket: str) -> None:
    env = {**moto.berth_env(bucket, rootdirectory="cfg"), "REGISTRY_STORAGE_S3_MAXCONNECTIONS": "7"}
    settings = config.load(environ=env)
    driver: Any = create(settings.storage.driver, settings.storage.driver_parameters)
    options = driver.client.meta.config
    assert options.max_pool_connections == 7
    assert options.retries["mode"] == "standard"
    assert options.s3["addressing_style"] == "path"
    driver.put_content("/x", b"1")
    assert driver.get_content("/x") == b"1"


def test_skipverify_builds_a_client_that_checks_no_certificate(moto: MotoServer, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from services.blobstore.drivers.s3 import client

    built: list[dict[str, Any]] = []
    real = client._SESSION.client
    monkeypatch.setattr(client._SESSION, "client", lambda *args, **kwargs: built.append(kwargs) or real(*args, **kwargs))
    for skipverify in ("true", "false"):
        settings = config.load(environ={**moto.berth_env(bucket), "REGISTRY_STORAGE_S3_SKIPVERIFY": skipverify})
        driver = create(settings.storage.driver, settings.storage.driver_parameters)
        driver.put_content("/x", b"1")
    # None is botocore's default: verify, with its own CA bundle (or AWS_CA_BUNDLE).
    assert [kwargs["verify"] for kwargs in built] == [False, None]


# --- requests per operation ------------------------------------------------------------------


def storage_calls(operation: str) -> float:
    return REGISTRY.get_sample_value("berth_storage_calls_total", {"driver": "s3", "operation": operation}) or 0.0


def test_requests_per_operation(make: Callable[..., Any]) -> None:
    driver: StorageDriver = make()
    counted = Requests(driver)
    driver.put_content("/dir/file", b"12345")

    assert counted.during(lambda: driver.put_content("/dir/file", b"12345")) == {"PutObject": 1}
    assert counted.during(lambda: driver.get_content("/dir/file")) == {"GetObject": 1}
    assert counted.during(lambda: driver.stat("/dir/file")) == {"HeadObject": 1}
    assert counted.during(lambda: driver.stat("/dir")) == {"HeadObject": 1, "ListObjectsV2": 1}
    assert counted.during(lambda: driver.stat("/missing")) == {"HeadObject": 1, "ListObjectsV2": 1}
    assert counted.during(lambda: driver.list("/dir")) == {"ListObjectsV2": 1}
    assert counted.during(lambda: driver.reader("/dir/file", 2).close()) == {"GetObject": 1}
    assert counted.during(lambda: driver.redirect_url("/dir/file")) == {}
    assert counted.during(lambda: driver.writer("/dir/new").commit()) == {"PutObject": 1}
    assert counted.during(lambda: driver.writer("/dir/new", append=True).commit()) == {"GetObject": 1}
    assert counted.during(lambda: driver.move("/dir/new", "/dir/moved")) == {"HeadObject": 1, "CopyObject": 1, "DeleteObject": 1}

    # A small append cycle, as each chunk of a registry upload is: read the state, store the tail.
    def append() -> None:
        with driver.writer("/dir/file", append=True) as writer:
            writer.write(b"more")

    assert counted.during(append) == {"GetObject": 1, "PutObject": 1}

    before = storage_calls("HeadObject")
    driver.stat("/dir/file")
    assert storage_calls("HeadObject") == before + 1


def test_walk_lists_once_rather_than_stat_each_entry(make: Callable[..., Any]) -> None:
    driver = make()
    for path in ["/a/b/c", "/a/d", "/a.x", "/e"]:
        driver.put_content(path, b"x")
    counted = Requests(driver)
    entries: list[str] = []
    assert counted.during(lambda: entries.extend(i.path for i in driver.walk("/"))) == {"ListObjectsV2": 1}
    assert entries == ["/a", "/a/b", "/a/b/c", "/a/d", "/a.x", "/e"]


def test_a_failed_part_leaves_the_content_as_it_was(make: Callable[..., Any]) -> None:
    """A part the store refuses fails the write, and the path keeps what the previous writers
    stored (not a marker counting parts that are not there), so the client can resume."""
    driver = make(uploadconcurrency=1)
    first = os.urandom(6 * MiB)
    with driver.writer("/u/data") as writer:
        writer.write(first)
        writer.commit()
    sent = {"parts": 0}

    def refuse_second_part(params: dict[str, Any], **_: Any) -> None:
        sent["parts"] += 1
        if sent["parts"] == 2:
            raise RuntimeError("the store refused a part")

    driver.client.meta.events.register("before-parameter-build.s3.UploadPart", refuse_second_part)
    writer = driver.writer("/u/data", append=True)
    # The part's own error, or the commit's that follows it: which one depends on when the part was sent.
    with pytest.raises((RuntimeError, StorageError)):
        try:
            for i in range(4):
                writer.write(bytes([i]) * (5 * MiB))
        finally:
            writer.commit()
    driver.client.meta.events.unregister("before-parameter-build.s3.UploadPart", refuse_second_part)

    assert driver.file_size("/u/data") == len(first)
    more = os.urandom(3 * MiB)
    with make().writer("/u/data", append=True) as writer:  # another replica resumes
        writer.write(more)
        writer.commit()
    assert driver.get_content("/u/data") == first + more


def test_a_blob_head_costs_one_request_once_its_size_is_known(make: Callable[..., Any]) -> None:
    from services.blobstore import layout
    from services.blobstore.blobs import Blobs
    from services.common.errors import RegistryError

    driver = make()
    blobs = Blobs(driver)
    digest = "sha256:" + hashlib.sha256(b"layer").hexdigest()
    driver.put_content(layout.blob_data(digest), b"layer")
    blobs.link("a/repo", digest)
    counted = Requests(driver)
    assert counted.during(lambda: blobs.stat("a/repo", digest)) == {"HeadObject": 2}  # link, data
    assert counted.during(lambda: blobs.stat("a/repo", digest)) == {"HeadObject": 1}  # the link only
    # The link is always asked: an unlinked blob is unknown at once, whatever the size cache holds.
    blobs.delete("a/repo", digest)
    with pytest.raises(RegistryError):
        blobs.stat("a/repo", digest)


def test_a_lock_whose_holder_died_is_taken_over_after_its_lease(make: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from services.blobstore.drivers.s3 import locks

    monkeypatch.setattr(locks, "LOCK_LEASE", 2.0)
    monkeypatch.setattr(locks.Lease, "_renew", lambda self: None)  # the holder's process is gone
    held = make().lock("/repo")
    held.__enter__()  # and never left
    start = time.monotonic()
    with make().lock("/repo"):
        waited = time.monotonic() - start
    assert 2.0 <= waited < 8.0


def test_a_lock_held_longer_than_its_lease_stays_held_while_renewed(make: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from services.blobstore.drivers.s3 import locks

    monkeypatch.setattr(locks, "LOCK_LEASE", 1.5)
    holder, waiter = make(), make()
    got = threading.Event()

    def take() -> None:
        with waiter.lock("/repo"):
            got.set()

    with holder.lock("/repo"):
        threading.Thread(target=take, daemon=True).start()
        assert not got.wait(4.0)
    assert got.wait(5.0)


def test_a_lock_costs_two_requests_when_free(make: Callable[..., Any]) -> None:
    driver = make()

    def locked() -> None:
        with driver.lock("/repo"):
            pass

    assert Requests(driver).during(locked) == {"PutObject": 1, "DeleteObject": 1}
