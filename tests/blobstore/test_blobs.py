"""blobs.Blobs over the in-memory driver: a repository reads a blob only through its link, ranges
are checked before the first byte, the size memo never vouches for a link, deletes unlink only."""

from __future__ import annotations

import hashlib

import pytest

from services.blobstore import blobs as blobs_module
from services.blobstore import layout
from services.blobstore.blobs import BlobInfo, Blobs
from services.blobstore.drivers import PathNotFound, StorageDriver, create
from services.common.errors import BLOB_UNKNOWN, DIGEST_INVALID, NAME_INVALID, RANGE_INVALID, RegistryError

DATA = bytes(range(256)) * 4 + b"tail"  # 1028 bytes
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()
EMPTY = "sha256:" + hashlib.sha256(b"").hexdigest()
REPO, OTHER = "blobs/one", "blobs/two"


@pytest.fixture()
def driver() -> StorageDriver:
    return create("inmemory", {})


@pytest.fixture()
def blobs(driver: StorageDriver) -> Blobs:
    return Blobs(driver)


def put(driver: StorageDriver, blobs: Blobs, data: bytes = DATA, *repos: str) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    driver.put_content(layout.blob_data(digest), data)
    for repo in repos or (REPO,):
        blobs.link(repo, digest)
    return digest


def code_of(call: object) -> object:
    with pytest.raises(RegistryError) as caught:
        call()  # type: ignore[operator]
    return caught.value.code


def read_all(blobs: Blobs, offset: int = 0, length: int = 0, chunk_size: int = 100, repo: str = REPO) -> tuple[int, list[bytes]]:
    size, chunks = blobs.read(repo, DIGEST, offset, length, chunk_size)
    return size, list(chunks)


def test_stat_needs_both_the_link_and_the_data(driver: StorageDriver, blobs: Blobs) -> None:
    assert code_of(lambda: blobs.stat(REPO, DIGEST)) is BLOB_UNKNOWN
    blobs.link(REPO, DIGEST)  # a link to data that is not there
    assert code_of(lambda: blobs.stat(REPO, DIGEST)) is BLOB_UNKNOWN
    driver.put_content(layout.blob_data(DIGEST), DATA)
    assert blobs.stat(REPO, DIGEST) == BlobInfo(DIGEST, len(DATA))
    assert code_of(lambda: blobs.stat(OTHER, DIGEST)) is BLOB_UNKNOWN  # data, but no link here
    assert driver.get_content(layout.layer_link(REPO, DIGEST)) == DIGEST.encode()  # registry:2's link


def test_the_size_memo_never_vouches_for_a_link(driver: StorageDriver, blobs: Blobs) -> None:
    put(driver, blobs)
    assert blobs.stat(REPO, DIGEST).size == len(DATA)
    driver.delete(layout.layer_link_dir(REPO, DIGEST))
    assert code_of(lambda: blobs.stat(REPO, DIGEST)) is BLOB_UNKNOWN


def test_absence_is_not_remembered(driver: StorageDriver, blobs: Blobs) -> None:
    assert blobs.stat_global(DIGEST) is None
    driver.put_content(layout.blob_data(DIGEST), DATA)
    assert blobs.stat_global(DIGEST) == BlobInfo(DIGEST, len(DATA))


def test_sizes_are_remembered_and_the_memo_is_bounded(driver: StorageDriver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blobs_module, "_SIZES_MAX", 2)
    blobs = Blobs(driver)  # the bound is read when the memo is made
    digests = [put(driver, blobs, bytes([i]) * (i + 1)) for i in range(3)]
    for d in digests:
        assert blobs.stat_global(d) is not None
    for d in digests:
        driver.delete(layout.blob_data(d))
    assert blobs.stat_global(digests[0]) is None  # evicted: asked of the store again
    assert blobs.stat_global(digests[1]) == BlobInfo(digests[1], 2)  # remembered
    assert blobs.stat_global(digests[2]) == BlobInfo(digests[2], 3)
    blobs.stored(digests[0], 1)
    assert blobs.stat_global(digests[1]) is None  # least recently used went


@pytest.mark.parametrize(
    ("offset", "length", "expected"),
    [
        (0, 0, DATA),
        (1, 0, DATA[1:]),
        (0, 10, DATA[:10]),
        (500, 100, DATA[500:600]),
        (1000, 100, DATA[1000:]),
        (len(DATA) - 1, 0, DATA[-1:]),
        (len(DATA) - 1, 1, DATA[-1:]),
        (0, len(DATA) + 1, DATA),
    ],
)
def test_ranges(driver: StorageDriver, blobs: Blobs, offset: int, length: int, expected: bytes) -> None:
    put(driver, blobs)
    size, chunks = read_all(blobs, offset, length)
    assert size == len(DATA)
    assert b"".join(chunks) == expected
    assert all(0 < len(c) <= 100 for c in chunks)


@pytest.mark.parametrize(("offset", "length"), [(len(DATA), 0), (len(DATA) + 5, 1), (-1, 0), (0, -1), (10, -5)])
def test_unsatisfiable_ranges_fail_before_any_byte(driver: StorageDriver, blobs: Blobs, offset: int, length: int) -> None:
    put(driver, blobs)
    with pytest.raises(RegistryError) as caught:
        blobs.read(REPO, DIGEST, offset, length, 100)
    assert caught.value.code is RANGE_INVALID
    assert caught.value.detail["size"] == len(DATA)


def test_an_empty_blob_reads_as_nothing_from_offset_0_only(driver: StorageDriver, blobs: Blobs) -> None:
    put(driver, blobs, b"")
    size, chunks = blobs.read(REPO, EMPTY, 0, 0, 100)
    assert (size, list(chunks)) == (0, [])
    assert code_of(lambda: blobs.read(REPO, EMPTY, 1, 0, 100)) is RANGE_INVALID


def test_reads_fail_eagerly(driver: StorageDriver, blobs: Blobs) -> None:
    assert code_of(lambda: blobs.read(REPO, DIGEST, 0, 0, 100)) is BLOB_UNKNOWN  # not on the first next()
    put(driver, blobs)
    blobs.stat(REPO, DIGEST)  # the size is remembered ...
    driver.delete(layout.blob_data(DIGEST))  # ... and the data goes (garbage collection)
    assert code_of(lambda: blobs.read(REPO, DIGEST, 0, 0, 100)) is BLOB_UNKNOWN


def test_mount_from_a_repository_needs_its_link(driver: StorageDriver, blobs: Blobs) -> None:
    put(driver, blobs, DATA, OTHER)
    assert code_of(lambda: blobs.mount(REPO, DIGEST, "blobs/three")) is BLOB_UNKNOWN
    assert code_of(lambda: blobs.stat(REPO, DIGEST)) is BLOB_UNKNOWN  # nothing linked
    assert blobs.mount(REPO, DIGEST, OTHER) == BlobInfo(DIGEST, len(DATA))
    assert blobs.stat(REPO, DIGEST).size == len(DATA)


def test_mount_from_anywhere_asks_the_store_not_the_memo(driver: StorageDriver, blobs: Blobs) -> None:
    put(driver, blobs, DATA, OTHER)
    assert blobs.mount(REPO, DIGEST, "") == BlobInfo(DIGEST, len(DATA))
    blobs.stat(REPO, DIGEST)
    driver.delete(layout.blob_data(DIGEST))
    assert code_of(lambda: blobs.mount("blobs/three", DIGEST, "")) is BLOB_UNKNOWN
    assert code_of(lambda: blobs.stat("blobs/three", DIGEST)) is BLOB_UNKNOWN


def test_delete_unlinks_one_repository_and_keeps_the_data(driver: StorageDriver, blobs: Blobs) -> None:
    put(driver, blobs, DATA, REPO, OTHER)
    blobs.delete(REPO, DIGEST)
    assert code_of(lambda: blobs.stat(REPO, DIGEST)) is BLOB_UNKNOWN
    assert code_of(lambda: blobs.delete(REPO, DIGEST)) is BLOB_UNKNOWN  # twice
    assert blobs.stat(OTHER, DIGEST).size == len(DATA)
    assert driver.get_content(layout.blob_data(DIGEST)) == DATA
    with pytest.raises(PathNotFound):
        driver.stat(layout.layer_link_dir(REPO, DIGEST))  # the link's folder went, not just the file


def test_delete_of_an_unknown_blob(blobs: Blobs) -> None:
    assert code_of(lambda: blobs.delete(REPO, DIGEST)) is BLOB_UNKNOWN


def test_content_and_url_of_a_stored_blob(driver: StorageDriver, blobs: Blobs) -> None:
    put(driver, blobs)
    info = blobs.stat(REPO, DIGEST)
    assert blobs.content(info) == DATA
    assert blobs.url(DIGEST, "GET") is None  # the in-memory driver has no URLs
    driver.delete(layout.blob_data(DIGEST))  # gone meanwhile (garbage collection)
    assert code_of(lambda: blobs.content(info)) is BLOB_UNKNOWN


def test_missing_names_each_unreadable_digest_once_in_order(driver: StorageDriver, blobs: Blobs) -> None:
    put(driver, blobs)
    other = "sha256:" + hashlib.sha256(b"other").hexdigest()
    third = "sha512:" + hashlib.sha512(b"third").hexdigest()
    assert blobs.missing(REPO, [other, DIGEST, third, other]) == [other, third]
    assert blobs.missing(REPO, []) == []
    assert blobs.missing(OTHER, [DIGEST]) == [DIGEST]


def test_bad_names_and_digests_never_reach_the_driver(blobs: Blobs) -> None:
    assert code_of(lambda: blobs.stat("../x", DIGEST)) is NAME_INVALID
    assert code_of(lambda: blobs.stat(REPO, "sha256:../../x")) is DIGEST_INVALID
    assert code_of(lambda: blobs.link(REPO, "md5:" + "0" * 32)) is DIGEST_INVALID
    assert code_of(lambda: blobs.delete("Upper/case", DIGEST)) is NAME_INVALID
    assert code_of(lambda: blobs.mount(REPO, DIGEST, "../other")) is NAME_INVALID
