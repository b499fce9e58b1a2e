"""Conformance suite for storage drivers: every test runs against every driver in DRIVER_FACTORIES.

To cover a new driver, add one ``DriverFactory`` entry; tests that only make sense for one backend
(such as the filesystem driver's root confinement) live at the end, outside the parametrized fixture.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.blobstore.drivers import (
    FileInfo,
    InvalidOffset,
    InvalidPath,
    PathNotFound,
    StorageDriver,
    StorageError,
    create,
)

MiB = 1024 * 1024


@dataclass(frozen=True)
class DriverFactory:
    name: str
    # From the test's temporary folder and its request (for session fixtures such as "moto").
    parameters: Callable[[Path, pytest.FixtureRequest], dict[str, Any]]
    # Whether redirect_url gives a URL for GET and HEAD.
    redirects: bool = False
    # Whether two drivers built from the same parameters share the storage (as replicas do).
    shared: bool = True

    def build(self, tmp_path: Path, request: pytest.FixtureRequest) -> StorageDriver:
        return create(self.name, self.parameters(tmp_path, request))


def s3_parameters(tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    """A bucket of the test's own on the session's moto server, under a key prefix."""
    server = request.getfixturevalue("moto")
    return server.driver_parameters(server.new_bucket("drivers"), rootdirectory="/registry/root/", chunksize=5 * MiB)


DRIVER_FACTORIES: list[DriverFactory] = [
    DriverFactory("filesystem", lambda tmp_path, request: {"rootdirectory": str(tmp_path / "root")}),
    DriverFactory("inmemory", lambda tmp_path, request: {}, shared=False),
    DriverFactory("s3", s3_parameters, redirects=True),
]


@pytest.fixture(params=DRIVER_FACTORIES, ids=[factory.name for factory in DRIVER_FACTORIES])
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> StorageDriver:
    factory: DriverFactory = request.param
    return factory.build(tmp_path, request)


SHARED_FACTORIES = [factory for factory in DRIVER_FACTORIES if factory.shared]


@pytest.fixture(params=SHARED_FACTORIES, ids=[factory.name for factory in SHARED_FACTORIES])
def replicas(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[StorageDriver, StorageDriver]:
    """Two drivers on one storage, each with its own state, as in two blobstore processes."""
    factory: DriverFactory = request.param
    parameters = factory.parameters(tmp_path, request)
    return create(factory.name, parameters), create(factory.name, parameters)


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def snapshot(driver: StorageDriver) -> dict[str, bytes | None]:
    """Everything the driver holds: file contents by path, None for directories."""
    return {info.path: None if info.is_dir else driver.get_content(info.path) for info in driver.walk("/")}


def read_all(driver: StorageDriver, path: str, offset: int = 0, chunk: int = 64 * 1024) -> bytes:
    parts = []
    with driver.reader(path, offset) as stream:
        while block := stream.read(chunk):
            parts.append(block)
    return b"".join(parts)


# --- get_content / put_content ---------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 5 * MiB + 7], ids=["empty", "one-byte", "several-MiB"])
def test_put_then_get_round_trips(driver: StorageDriver, size: int) -> None:
    data = payload(size)
    driver.put_content("/blobs/data", data)
    assert driver.get_content("/blobs/data") == data
    assert driver.stat("/blobs/data").size == size


def test_put_content_replaces_longer_content_entirely(driver: StorageDriver) -> None:
    driver.put_content("/f", b"a much longer original content")
    driver.put_content("/f", b"short")
    assert driver.get_content("/f") == b"short"
    assert driver.stat("/f").size == 5


def test_a_marker_is_an_empty_file_in_new_folders_and_can_be_put_again(driver: StorageDriver) -> None:
    driver.put_marker("/a/b/mark")
    driver.put_marker("/a/b/mark")
    assert driver.get_content("/a/b/mark") == b""
    assert [(i.path, i.is_dir) for i in driver.walk("/")] == [("/a", True), ("/a/b", True), ("/a/b/mark", False)]


def test_put_content_creates_parent_directories(driver: StorageDriver) -> None:
    driver.put_content("/a/b/c/file", b"x")
    assert [(i.path, i.is_dir) for i in driver.walk("/")] == [
        ("/a", True),
        ("/a/b", True),
        ("/a/b/c", True),
        ("/a/b/c/file", False),
    ]


@pytest.mark.parametrize("path", ["/missing", "/missing/deeper/file", "/file/below-a-file", "/dir"])
def test_get_content_of_missing_file_raises_path_not_found(driver: StorageDriver, path: str) -> None:
    driver.put_content("/file", b"x")
    driver.put_content("/dir/child", b"x")
    with pytest.raises(PathNotFound) as raised:
        driver.get_content(path)
    assert raised.value.path == path


# --- reader ----------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [0, 1, 500_000, 1_048_575, 1_048_576], ids=["start", "one", "middle", "last-byte", "end"])
def test_reader_starts_at_offset(driver: StorageDriver, offset: int) -> None:
    data = payload(MiB)
    driver.put_content("/f", data)
    assert read_all(driver, "/f", offset) == data[offset:]


def test_reader_supports_partial_reads(driver: StorageDriver) -> None:
    driver.put_content("/f", b"0123456789")
    with driver.reader("/f", 3) as stream:
        assert stream.read(4) == b"3456"
        assert stream.read() == b"789"
        assert stream.read() == b""


@pytest.mark.parametrize("offset", [11, 1 << 40, -1])
def test_reader_offset_outside_content_raises_invalid_offset(driver: StorageDriver, offset: int) -> None:
    driver.put_content("/f", b"0123456789")
    with pytest.raises(InvalidOffset) as raised:
        driver.reader("/f", offset)
    assert raised.value.offset == offset


def test_reader_on_empty_file_at_zero_reads_nothing(driver: StorageDriver) -> None:
    driver.put_content("/empty", b"")
    assert read_all(driver, "/empty") == b""
    with pytest.raises(InvalidOffset):
        driver.reader("/empty", 1)


@pytest.mark.parametrize("path", ["/missing", "/file/below-a-file", "/dir"])
def test_reader_of_missing_file_raises_path_not_found(driver: StorageDriver, path: str) -> None:
    driver.put_content("/file", b"x")
    driver.put_content("/dir/child", b"x")
    with pytest.raises(PathNotFound):
        driver.reader(path)


def test_concurrent_readers_get_identical_bytes(driver: StorageDriver) -> None:
    data = payload(2 * MiB + 3)
    driver.put_content("/shared", data)
    expected = hashlib.sha256(data).hexdigest()
    workers = 8
    barrier = threading.Barrier(workers)

    def read(index: int) -> tuple[str, bytes]:
        barrier.wait()
        whole = hashlib.sha256(read_all(driver, "/shared", chunk=4096 + index)).hexdigest()
        return whole, read_all(driver, "/shared", offset=index * 1000)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(read, range(workers)))

    for index, (whole, tail) in enumerate(results):
        assert whole == expected
        assert tail == data[index * 1000 :]


# --- writer ----------------------------------------------------------------------------------


def test_streamed_write_in_many_chunks_reads_back_identically(driver: StorageDriver) -> None:
    data = payload(6 * MiB + 123)
    sizes = [1, 4095, 65_536, 12_345, 100_003]
    expected_hash = hashlib.sha256(data).hexdigest()
    writer = driver.writer("/uploads/u1/data")
    position = chunks = 0
    while position < len(data):
        chunk = data[position : position + sizes[chunks % len(sizes)]]
        assert writer.write(chunk) == len(chunk)
        position += len(chunk)
        chunks += 1
        assert writer.size == position
    writer.commit()

    assert chunks > 100
    assert driver.stat("/uploads/u1/data").size == len(data)
    assert hashlib.sha256(read_all(driver, "/uploads/u1/data")).hexdigest() == expected_hash


def test_writer_appends_across_close_and_reopen(driver: StorageDriver) -> None:
    parts = [payload(n, seed=n) for n in (10, 0, 70_000, 1)]
    written = 0
    for part in parts:
        with driver.writer("/upload", append=True) as writer:
            assert writer.size == written
            writer.write(part)
            written += len(part)
            assert writer.size == written
        assert driver.stat("/upload").size == written

    assert driver.get_content("/upload") == b"".join(parts)


def test_appending_writer_resumes_after_commit(driver: StorageDriver) -> None:
    first = driver.writer("/upload")
    first.write(b"abc")
    first.commit()
    second = driver.writer("/upload", append=True)
    assert second.size == 3
    second.write(b"defg")
    second.commit()
    assert driver.get_content("/upload") == b"abcdefg"
    assert driver.stat("/upload").size == 7


def test_appending_writer_on_missing_path_starts_empty(driver: StorageDriver) -> None:
    writer = driver.writer("/new/upload", append=True)
    assert writer.size == 0
    writer.write(b"hello")
    writer.commit()
    assert driver.get_content("/new/upload") == b"hello"


def test_non_appending_writer_truncates_existing_content(driver: StorageDriver) -> None:
    driver.put_content("/f", b"old and long content")
    writer = driver.writer("/f")
    assert writer.size == 0
    writer.write(b"new")
    writer.commit()
    assert driver.get_content("/f") == b"new"


def test_committed_writer_content_is_readable(driver: StorageDriver) -> None:
    writer = driver.writer("/f")
    writer.write(b"committed")
    writer.commit()
    assert driver.get_content("/f") == b"committed"
    assert read_all(driver, "/f", 4) == b"itted"
    info = driver.stat("/f")
    assert (info.size, info.is_dir) == (9, False)


def test_cancel_discards_content_of_writer_and_predecessors(driver: StorageDriver) -> None:
    driver.put_content("/uploads/other/data", b"keep")
    with driver.writer("/uploads/mine/data") as writer:
        writer.write(b"first session")
    writer = driver.writer("/uploads/mine/data", append=True)
    writer.write(b"second session")
    writer.cancel()

    with pytest.raises(PathNotFound):
        driver.get_content("/uploads/mine/data")
    with pytest.raises(PathNotFound):
        driver.stat("/uploads/mine/data")
    assert driver.get_content("/uploads/other/data") == b"keep"


def test_cancel_of_a_fresh_writer_leaves_no_file(driver: StorageDriver) -> None:
    writer = driver.writer("/f")
    writer.write(b"partial")
    writer.cancel()
    assert "/f" not in driver.list("/")


# --- stat ------------------------------------------------------------------------------------


def test_stat_of_file(driver: StorageDriver) -> None:
    before = time.time()
    driver.put_content("/dir/file", b"12345")
    info = driver.stat("/dir/file")
    assert isinstance(info, FileInfo)
    assert (info.path, info.size, info.is_dir) == ("/dir/file", 5, False)
    assert before - 2 <= info.modified <= time.time() + 2


@pytest.mark.parametrize("path", ["/", "/a", "/a/b"])
def test_stat_of_directory(driver: StorageDriver, path: str) -> None:
    driver.put_content("/a/b/file", b"12345")
    info = driver.stat(path)
    assert info.is_dir
    assert info.path == path


def test_stat_of_empty_root_is_a_directory(driver: StorageDriver) -> None:
    assert driver.stat("/").is_dir


def test_file_size_is_the_size_of_files_only(driver: StorageDriver) -> None:
    driver.put_content("/a/b/file", b"12345")
    driver.put_content("/a/empty", b"")
    assert driver.file_size("/a/b/file") == 5
    assert driver.file_size("/a/empty") == 0
    assert driver.file_size("/a/b") is None  # a directory
    assert driver.file_size("/a/missing") is None
    with driver.writer("/a/growing") as writer:  # content still being written counts
        writer.write(b"abc")
        writer.commit()
    assert driver.file_size("/a/growing") == 3


@pytest.mark.parametrize("path", ["/missing", "/missing/deeper", "/file/below-a-file", "/fil"])
def test_stat_of_missing_path_raises_path_not_found(driver: StorageDriver, path: str) -> None:
    driver.put_content("/file", b"x")
    with pytest.raises(PathNotFound):
        driver.stat(path)


# --- list ------------------------------------------------------------------------------------


def test_list_returns_sorted_full_paths_of_direct_children(driver: StorageDriver) -> None:
    for name in ["zeta", "alpha", "Beta", "mid/x", "mid/deeper/y", "_u", "-d", ".h"]:
        driver.put_content(f"/dir/{name}", b"x")
    driver.put_content("/dirty", b"sibling with a shared prefix")
    assert driver.list("/dir") == ["/dir/-d", "/dir/.h", "/dir/Beta", "/dir/_u", "/dir/alpha", "/dir/mid", "/dir/zeta"]
    assert driver.list("/dir/mid") == ["/dir/mid/deeper", "/dir/mid/x"]


def test_list_root(driver: StorageDriver) -> None:
    assert driver.list("/") == []
    driver.put_content("/b/file", b"x")
    driver.put_content("/a", b"x")
    assert driver.list("/") == ["/a", "/b"]


@pytest.mark.parametrize("path", ["/missing", "/missing/deeper", "/file"])
def test_list_of_missing_directory_raises_path_not_found(driver: StorageDriver, path: str) -> None:
    driver.put_content("/file", b"x")
    with pytest.raises(PathNotFound):
        driver.list(path)


# --- children ---------------------------------------------------------------------------------

ODD_CHILDREN = ["a", "a-b", "a.b", "a0", "a_c", "ab", "A", "0", "-x", ".y", "b-", "b", "b.", "b-c-d", "zz"]


@pytest.mark.parametrize("page", [1000, 1, 2, 3], ids=["page-1000", "page-1", "page-2", "page-3"])
def test_children_are_sorted_by_name_from_after_on(driver: StorageDriver, page: int) -> None:
    if hasattr(driver, "children_page"):
        driver.children_page = page  # S3: names are handed out across page boundaries too
    for i, name in enumerate(ODD_CHILDREN):  # files, folders, and folders holding folders
        driver.put_content(f"/dir/{name}" + ("", "/f", "/sub/f")[i % 3], b"x")
    driver.put_content("/dir-sibling/f", b"x")
    everything = sorted(ODD_CHILDREN)
    assert list(driver.children("/dir")) == [f"/dir/{name}" for name in everything]
    assert list(driver.children("/dir")) == driver.list("/dir")
    for after in ["", "a", "a-", "a-b", "a.", "a/", "a0", "b", "b-c", "z", "zz", "zzz", "_"]:
        assert list(driver.children("/dir", after)) == [f"/dir/{n}" for n in everything if n > after], after


def test_children_stop_early_and_of_root(driver: StorageDriver) -> None:
    for name in ["c", "a", "b"]:
        driver.put_content(f"/{name}/f", b"x")
    children = iter(driver.children("/"))
    assert next(children) == "/a"
    assert list(driver.children("/", "a")) == ["/b", "/c"]
    assert list(driver.children("/", "c")) == []


@pytest.mark.parametrize("path", ["/missing", "/missing/deeper", "/file"])
@pytest.mark.parametrize("after", ["", "a", "zzz"])
def test_children_of_missing_directory_raise_path_not_found(driver: StorageDriver, path: str, after: str) -> None:
    driver.put_content("/file", b"x")
    driver.put_content("/dir/b", b"x")
    with pytest.raises(PathNotFound):
        list(driver.children(path, after))
    assert list(driver.children("/dir", "zzz")) == []  # a folder with nothing after ``after``


# --- move ------------------------------------------------------------------------------------


def test_move_file_to_new_directory(driver: StorageDriver) -> None:
    data = payload(100_000)
    driver.put_content("/src", data)
    driver.put_content("/other", b"untouched")
    driver.move("/src", "/deep/nested/dst")

    assert driver.get_content("/deep/nested/dst") == data
    with pytest.raises(PathNotFound):
        driver.get_content("/src")
    assert driver.list("/") == ["/deep", "/other"]
    assert driver.get_content("/other") == b"untouched"


def test_move_overwrites_existing_destination(driver: StorageDriver) -> None:
    driver.put_content("/src", b"new")
    driver.put_content("/dst", b"old and longer")
    driver.move("/src", "/dst")
    assert driver.get_content("/dst") == b"new"
    assert driver.stat("/dst").size == 3
    assert driver.list("/") == ["/dst"]


@pytest.mark.parametrize("source", ["/missing", "/missing-dir/file", "/file/below-a-file"])
def test_move_of_missing_source_raises_and_changes_nothing(driver: StorageDriver, source: str) -> None:
    driver.put_content("/file", b"x")
    before = snapshot(driver)
    with pytest.raises(PathNotFound) as raised:
        driver.move(source, "/new-dir/dst")
    assert raised.value.path == source
    assert snapshot(driver) == before


# --- delete ----------------------------------------------------------------------------------


def test_delete_file(driver: StorageDriver) -> None:
    driver.put_content("/dir/blob", b"x")
    driver.put_content("/dir/blob2", b"y")
    driver.put_content("/dir/blob.tmp", b"z")
    driver.delete("/dir/blob")
    with pytest.raises(PathNotFound):
        driver.get_content("/dir/blob")
    assert driver.list("/dir") == ["/dir/blob.tmp", "/dir/blob2"]


def test_delete_directory_tree(driver: StorageDriver) -> None:
    for path in ["/repo/a/b/c", "/repo/a/d", "/repo/e", "/repository/x", "/repo.old"]:
        driver.put_content(path, b"x")
    driver.delete("/repo")
    for path in ["/repo", "/repo/a", "/repo/a/b/c", "/repo/e"]:
        with pytest.raises(PathNotFound):
            driver.stat(path)
    assert snapshot(driver) == {"/repo.old": b"x", "/repository": None, "/repository/x": b"x"}


def test_delete_nested_directory_keeps_siblings(driver: StorageDriver) -> None:
    for path in ["/repo/a/b", "/repo/a/c", "/repo/e"]:
        driver.put_content(path, b"x")
    driver.delete("/repo/a")
    assert driver.list("/repo") == ["/repo/e"]


@pytest.mark.parametrize("path", ["/missing", "/missing/deeper/file", "/file/below-a-file"])
def test_delete_of_missing_path_raises_path_not_found(driver: StorageDriver, path: str) -> None:
    driver.put_content("/file", b"x")
    with pytest.raises(PathNotFound) as raised:
        driver.delete(path)
    assert raised.value.path == path
    assert driver.get_content("/file") == b"x"


# --- walk / redirect_url ---------------------------------------------------------------------


def test_walk_yields_every_entry_parents_first_in_sorted_order(driver: StorageDriver) -> None:
    driver.put_content("/e", b"")
    driver.put_content("/a/d", b"1")
    driver.put_content("/a/b/c.txt", b"123")
    driver.put_content("/a/b/a.txt", b"12")
    expected = [
        ("/a", True, None),
        ("/a/b", True, None),
        ("/a/b/a.txt", False, 2),
        ("/a/b/c.txt", False, 3),
        ("/a/d", False, 1),
        ("/e", False, 0),
    ]

    def entries(path: str) -> list[tuple[str, bool, int | None]]:
        return [(i.path, i.is_dir, None if i.is_dir else i.size) for i in driver.walk(path)]

    assert entries("/") == expected
    assert entries("/a/b") == expected[2:4]


def test_walk_of_missing_directory_raises_path_not_found(driver: StorageDriver) -> None:
    with pytest.raises(PathNotFound):
        list(driver.walk("/missing"))


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT"])
def test_redirect_url_only_for_reads_where_the_driver_has_one(driver: StorageDriver, method: str, request: pytest.FixtureRequest) -> None:
    driver.put_content("/blob", b"x")
    url = driver.redirect_url("/blob", method)
    if method == "PUT" or not request.node.callspec.params["driver"].redirects:
        assert url is None
    else:
        assert url is not None and url.startswith(("http://", "https://"))


# --- lock ------------------------------------------------------------------------------------


def count_under_lock(drivers: list[StorageDriver], threads_each: int, rounds: int) -> int:
    """Threads spread over ``drivers`` each add one to a counter file ``rounds`` times, a read
    and a write apart, under the lock; returns the count: short of the total if increments raced."""
    drivers[0].put_content("/counter", b"0")

    def bump(driver: StorageDriver) -> None:
        for _ in range(rounds):
            with driver.lock("/repo"):
                value = int(driver.get_content("/counter"))
                time.sleep(0.002)
                driver.put_content("/counter", str(value + 1).encode())

    with ThreadPoolExecutor(len(drivers) * threads_each) as pool:
        for future in [pool.submit(bump, d) for d in drivers for _ in range(threads_each)]:
            future.result()
    return int(drivers[0].get_content("/counter"))


def taker(driver: StorageDriver, path: str) -> threading.Event:
    """Takes the lock ``path`` in a thread of its own, letting go at once; set once it had it."""
    had = threading.Event()

    def take() -> None:
        with driver.lock(path):
            had.set()

    threading.Thread(target=take, daemon=True).start()
    return had


def test_lock_excludes_the_other_threads(driver: StorageDriver) -> None:
    assert count_under_lock([driver], threads_each=4, rounds=10) == 40


def test_lock_excludes_the_other_replicas_sharing_the_storage(replicas: tuple[StorageDriver, StorageDriver]) -> None:
    assert count_under_lock(list(replicas), threads_each=3, rounds=8) == 48


def test_lock_waits_for_a_holder_of_the_same_name_only(driver: StorageDriver) -> None:
    with driver.lock("/repo/a"):
        assert taker(driver, "/repo/b").wait(10)
        same = taker(driver, "/repo/a")
        assert not same.wait(0.3)
    assert same.wait(10)


def test_lock_is_released_when_its_holder_raises(driver: StorageDriver) -> None:
    with pytest.raises(RuntimeError), driver.lock("/repo"):
        raise RuntimeError("failed while holding the lock")
    assert taker(driver, "/repo").wait(10)


def test_lock_adds_nothing_listings_show(driver: StorageDriver) -> None:
    driver.put_content("/repo/file", b"x")
    before = snapshot(driver)
    with driver.lock("/repo"), driver.lock("/elsewhere/missing"):
        assert snapshot(driver) == before
        assert driver.list("/") == ["/repo"]
    assert snapshot(driver) == before
    assert driver.list("/") == ["/repo"]


# --- valid and invalid paths -----------------------------------------------------------------


ODD_VALID_NAMES = {
    "hidden": "/.hidden",
    "three-dots": "/...",
    "double-dot-inside": "/a..b",
    "trailing-dot": "/trailing.",
    "leading-dash": "/-leading-dash",
    "underscores": "/__init__",
    "mixed-case": "/MiXeD.Case-9_x",
    "single-char": "/0",
    "temp-file-lookalike": "/.berth-tmp-0123",
    "long-name": "/" + "n" * 255,
    "deep": "/" + "/".join(f"d{i}" for i in range(40)) + "/leaf",
}


@pytest.mark.parametrize("path", ODD_VALID_NAMES.values(), ids=ODD_VALID_NAMES.keys())
def test_odd_but_valid_names_work(driver: StorageDriver, path: str) -> None:
    parent = path.rsplit("/", 1)[0] or "/"
    driver.put_content(path, b"content")
    assert driver.get_content(path) == b"content"
    assert driver.stat(path).size == 7
    assert driver.list(parent) == [path]
    with driver.writer(path, append=True) as writer:
        writer.write(b"+more")
    assert read_all(driver, path, 7) == b"+more"
    driver.move(path, "/moved" + path)
    assert driver.get_content("/moved" + path) == b"content+more"
    driver.delete("/moved" + path)
    with pytest.raises(PathNotFound):
        driver.stat("/moved" + path)


INVALID_PATHS = {
    "empty": "",
    "dot": ".",
    "dotdot": "..",
    "relative": "a/b",
    "relative-single": "a",
    "double-leading-slash": "//x",
    "double-inner-slash": "/a//b",
    "trailing-slash": "/a/",
    "parent-component": "/a/../b",
    "leading-parent": "/..",
    "escape-root": "/../etc/passwd",
    "current-component": "/a/./b",
    "leading-current": "/.",
    "space": "/a b",
    "unicode": "/caf\u00e9",
    "cjk": "/\u65e5\u672c",
    "newline": "/a\n",
    "nul": "/a\x00b",
    "backslash": "/a\\b",
    "colon": "/sha256:abc",
}

Operation = Callable[[StorageDriver, str], object]
KEEP = "/keep/file"

OPERATIONS: dict[str, Operation] = {
    "get_content": lambda d, p: d.get_content(p),
    "put_content": lambda d, p: d.put_content(p, b"data"),
    "put_marker": lambda d, p: d.put_marker(p),
    "reader": lambda d, p: d.reader(p).close(),
    "writer": lambda d, p: d.writer(p).commit(),
    "writer-append": lambda d, p: d.writer(p, append=True).commit(),
    "stat": lambda d, p: d.stat(p),
    "list": lambda d, p: d.list(p),
    "move-source": lambda d, p: d.move(p, "/moved"),
    "move-dest": lambda d, p: d.move(KEEP, p),
    "delete": lambda d, p: d.delete(p),
    "walk": lambda d, p: [*d.walk(p)],
    "redirect_url": lambda d, p: d.redirect_url(p),
    "lock": lambda d, p: d.lock(p).__enter__(),
    "file_size": lambda d, p: d.file_size(p),
    "children": lambda d, p: [*d.children(p)],
    "delete_files": lambda d, p: d.delete_files([p]),
    # Every path is checked before the first is deleted: the valid one stays.
    "delete_files-after-a-valid-path": lambda d, p: d.delete_files([KEEP, p]),
}
ROOT_ACCEPTING = {"stat", "list", "walk", "children"}


def backend_calls(driver: StorageDriver) -> list[str]:
    """Spies on the driver's backend methods (``_get_content`` for ``get_content`` ...); the
    returned list fills with the names of those called."""
    called: list[str] = []
    for name in sorted(StorageDriver._CHECKED):
        real = getattr(driver, f"_{name}")

        def spy(*args: Any, _real: Callable[..., Any] = real, _name: str = name, **kwargs: Any) -> Any:
            called.append(_name)
            return _real(*args, **kwargs)

        setattr(driver, f"_{name}", spy)
    return called


@pytest.mark.parametrize("operation", OPERATIONS.values(), ids=OPERATIONS.keys())
@pytest.mark.parametrize("path", INVALID_PATHS.values(), ids=INVALID_PATHS.keys())
def test_invalid_path_is_refused_without_side_effects(driver: StorageDriver, path: str, operation: Operation) -> None:
    """Refused by the base class: the backend never sees the path."""
    driver.put_content(KEEP, b"keep")
    before = snapshot(driver)
    called = backend_calls(driver)
    with pytest.raises(InvalidPath):
        operation(driver, path)
    assert called == []
    assert snapshot(driver) == before


@pytest.mark.parametrize(
    "operation",
    [op for name, op in OPERATIONS.items() if name not in ROOT_ACCEPTING],
    ids=[name for name in OPERATIONS if name not in ROOT_ACCEPTING],
)
def test_root_is_refused_where_a_file_path_is_needed(driver: StorageDriver, operation: Operation) -> None:
    driver.put_content(KEEP, b"keep")
    before = snapshot(driver)
    called = backend_calls(driver)
    with pytest.raises(InvalidPath):
        operation(driver, "/")
    assert called == []
    assert snapshot(driver) == before


def test_a_driver_cannot_override_a_checked_method() -> None:
    """Backends implement the protected methods; the public ones, which check paths, stay the base's."""
    with pytest.raises(TypeError, match="_get_content"):

        class Unchecked(StorageDriver):  # refused as it is defined
            def get_content(self, path: str) -> bytes:
                return b""


# --- filesystem driver only: confinement to the root and temporary files ---------------------


@pytest.fixture
def fs_root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture
def fs_driver(fs_root: Path) -> StorageDriver:
    return create("filesystem", {"rootdirectory": str(fs_root)})


OUTSIDE_CONTENT = {"secret": b"secret"}


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the root whose content must never change."""
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "secret").write_bytes(b"secret")
    return directory


def disk_tree(directory: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(directory)): None if p.is_dir() else p.read_bytes() for p in sorted(directory.rglob("*"))}


@pytest.fixture
def planted(fs_driver: StorageDriver, fs_root: Path, outside: Path) -> StorageDriver:
    """Symlinks inside the root that point outside it, next to one legitimate file."""
    fs_driver.put_content("/legit", b"legit")
    (fs_root / "link-file").symlink_to(outside / "secret")
    (fs_root / "link-dir").symlink_to(outside, target_is_directory=True)
    (fs_root / "dangling").symlink_to(outside / "created-through-link")
    return fs_driver


SYMLINK_ESCAPES: dict[str, Callable[[StorageDriver], object]] = {
    "get_content-file": lambda d: d.get_content("/link-file"),
    "get_content-via-dir": lambda d: d.get_content("/link-dir/secret"),
    "reader": lambda d: d.reader("/link-file").close(),
    "put_content-file": lambda d: d.put_content("/link-file", b"pwned"),
    "put_content-via-dir": lambda d: d.put_content("/link-dir/new", b"pwned"),
    "put_content-dangling": lambda d: d.put_content("/dangling", b"pwned"),
    "writer-file": lambda d: d.writer("/link-file").commit(),
    "writer-append-file": lambda d: d.writer("/link-file", append=True).commit(),
    "writer-dangling": lambda d: d.writer("/dangling").commit(),
    "writer-via-dir": lambda d: d.writer("/link-dir/new").commit(),
    "stat-file": lambda d: d.stat("/link-file"),
    "stat-dir": lambda d: d.stat("/link-dir"),
    "list-dir": lambda d: d.list("/link-dir"),
    "move-from-link": lambda d: d.move("/link-file", "/stolen"),
    "move-onto-link": lambda d: d.move("/legit", "/link-file"),
    "move-into-linked-dir": lambda d: d.move("/legit", "/link-dir/secret"),
    "delete-link": lambda d: d.delete("/link-file"),
    "delete-via-dir": lambda d: d.delete("/link-dir/secret"),
    "delete-linked-dir": lambda d: d.delete("/link-dir"),
}


@pytest.mark.parametrize("operation", SYMLINK_ESCAPES.values(), ids=SYMLINK_ESCAPES.keys())
def test_filesystem_refuses_symlinks_out_of_root(
    planted: StorageDriver, fs_root: Path, outside: Path, operation: Callable[[StorageDriver], object]
) -> None:
    with pytest.raises(InvalidPath):
        operation(planted)
    assert disk_tree(outside) == OUTSIDE_CONTENT
    assert (fs_root / "legit").read_bytes() == b"legit"
    assert not (fs_root / "stolen").exists()


def test_filesystem_refuses_new_folders_below_a_folder_swapped_for_a_symlink(
    fs_driver: StorageDriver, fs_root: Path, outside: Path
) -> None:
    """A folder the driver has already used (and remembers as clean) is replaced by a symlink out
    of the root: a write into a folder not made yet below it is still refused."""
    fs_driver.put_content("/repo/known/file", b"x")
    shutil.rmtree(fs_root / "repo")
    (fs_root / "repo").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidPath):
        fs_driver.put_content("/repo/known/new/file", b"pwned")
    with pytest.raises(InvalidPath):
        fs_driver.put_marker("/repo/other/mark")
    assert disk_tree(outside) == OUTSIDE_CONTENT


def test_filesystem_delete_of_tree_containing_outward_symlink_keeps_target(fs_driver: StorageDriver, fs_root: Path, outside: Path) -> None:
    fs_driver.put_content("/repo/file", b"x")
    (fs_root / "repo" / "escape").symlink_to(outside, target_is_directory=True)
    fs_driver.delete("/repo")
    assert not (fs_root / "repo").exists()
    assert disk_tree(outside) == OUTSIDE_CONTENT


def test_filesystem_operations_stay_inside_root(fs_driver: StorageDriver, tmp_path: Path, outside: Path) -> None:
    fs_driver.put_content("/a/b", b"x")
    with fs_driver.writer("/up/data") as writer:
        writer.write(b"y")
    fs_driver.move("/up/data", "/blobs/data")
    fs_driver.delete("/a")
    for path in ["/../outside/secret", "/a/../../outside/secret"]:
        with pytest.raises(InvalidPath):
            fs_driver.put_content(path, b"pwned")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside", "root"]
    assert disk_tree(outside) == OUTSIDE_CONTENT


def test_filesystem_put_content_leaves_no_temporary_file(fs_driver: StorageDriver, fs_root: Path) -> None:
    fs_driver.put_content("/dir/file", b"first")
    fs_driver.put_content("/dir/file", b"second")
    fs_driver.put_content("/dir/sub/x", b"x")
    with pytest.raises((StorageError, OSError)):
        fs_driver.put_content("/dir/sub", b"a directory is in the way")
    assert sorted(os.listdir(fs_root / "dir")) == ["file", "sub"]
    assert os.listdir(fs_root / "dir" / "sub") == ["x"]
    assert (fs_root / "dir" / "file").read_bytes() == b"second"


def test_filesystem_lock_excludes_another_process_until_it_dies(fs_driver: StorageDriver, fs_root: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from services.blobstore.drivers import create; "
                "held = create('filesystem', {'rootdirectory': sys.argv[1]}).lock('/repo'); held.__enter__(); "
                "print('held', flush=True); time.sleep(60)"
            ),
            str(fs_root),
        ],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        waiting = taker(fs_driver, "/repo")
        assert not waiting.wait(0.3)
    finally:
        holder.kill()
        holder.wait()
    assert waiting.wait(10)


def test_writes_and_deletes_of_one_folder_at_once_never_fail(driver: StorageDriver) -> None:
    """Garbage collection removes a repository's emptied folders while a push may link a blob into
    them: each write either lands or is removed with the folder, and never fails; the delete fails
    only by finding the folder in use again (ENOTEMPTY), which the collector takes as "keep it"."""

    errors: list[BaseException] = []
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                driver.put_content(f"/race/folder/_layers/sha256/{n:064x}/link", b"x")
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

    def deleter() -> None:  # a collection removes a folder now and then, not in a tight loop
        while not stop.is_set():
            time.sleep(0.01)
            try:
                driver.delete("/race/folder/_layers")
            except PathNotFound:
                pass
            except OSError as exc:  # a folder kept busy may win over its delete: the collector keeps it
                if exc.errno != errno.ENOTEMPTY:
                    errors.append(exc)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=writer), threading.Thread(target=writer), threading.Thread(target=deleter)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == [], errors[:3]
