"""The catalog and tags pages of the blobstore, on every driver: whatever the names (nested, with
dots, dashes and underscores), following the pages gives exactly the sorted list of all names, and
a page starting after any ``last`` (a name or not) is exactly the names after it."""

from __future__ import annotations

import random

import pytest

from services.blobstore import layout
from services.blobstore.blobs import Blobs
from services.blobstore.drivers import StorageDriver
from services.blobstore.manifests import Catalog, Manifests
from services.common.errors import RegistryError
from tests.blobstore.test_drivers import driver  # noqa: F401 - the fixture, once per driver

DIGEST = "sha256:" + "ab" * 32

# Around the characters that sort below "/" ("-", ".") and just above it ("0"), and "_".
ODD = [
    "a",
    "a-b",
    "a.b",
    "a/b",
    "a/b/c",
    "a-b/c",
    "a.b/c",
    "a0",
    "a_b",
    "a__b",
    "a/b-c",
    "a/b.c",
    "a/b0",
    "ab",
    "b",
    "b/a/a",
    "b/a-a",
    "b/a.a",
    "b/a/a/a",
    "c/d/e/f",
    "x-y.z_w",
    "x-y.z_w/v",
    "z",
]


def add_repository(driver: StorageDriver, name: str, rng: random.Random) -> None:  # noqa: F811 - a parameter, not the fixture
    path = layout.repository(name)
    if rng.random() < 0.5:
        driver.put_content(f"{path}/_manifests/tags/latest/current/link", DIGEST.encode())
    else:  # only blobs: a repository as well, as in registry:2
        driver.put_content(f"{path}/_layers/sha256/{'ab' * 32}/link", DIGEST.encode())
    if rng.random() < 0.3:
        driver.put_content(f"{path}/_uploads/x/startedat", b"0")


def random_names(rng: random.Random, count: int) -> list[str]:
    parts = ["a", "b", "a-b", "a.b", "a_b", "ab", "a0", "b--c", "0"]
    names: set[str] = set(ODD)
    while len(names) < count:
        names.add("/".join(rng.choice(parts) for _ in range(rng.randint(1, 3))))
    return sorted(names)


def follow(list_page, limit: int) -> list[str]:
    seen: list[str] = []
    last = ""
    while True:
        page = list_page(last, limit)
        assert len(page.names) <= limit
        seen += page.names
        if not page.more:
            return seen
        assert page.names
        last = page.names[-1]


@pytest.mark.parametrize("seed", [1, 2])
def test_catalog_pages_are_the_sorted_names(driver: StorageDriver, seed: int) -> None:  # noqa: F811
    rng = random.Random(seed)
    remote = hasattr(driver, "children_page")
    if remote:
        driver.children_page = 3  # S3: across many ListObjectsV2 pages (each a request to moto)
    names = random_names(rng, 30 if remote else 60)
    for name in names:
        add_repository(driver, name, rng)
    # Folders that are no repository: a namespace alone, and one holding only uploads.
    driver.put_content(f"{layout.REPOSITORIES}/ns-only/deeper/_uploads/x/startedat", b"0")
    catalog = Catalog(driver)
    assert catalog.list("", 0).names == names
    for limit in (2, 17) if remote else (1, 2, 5, 17):
        assert follow(catalog.list, limit) == names
    lasts = [*names[:: 4 if remote else 1], "", "a-", "a.", "a/", "a/b/", "a/b-", "a0/", "b/a/", "a-b/", "zz", "0", "_", "~"]
    for last in lasts:
        after = [n for n in names if n > last]
        assert catalog.list(last, 4).names == after[:4], last
        assert catalog.list(last, 4).more == (len(after) > 4), last
        if not remote:
            assert catalog.list(last, 0).names == after, last


def test_tags_pages_are_the_sorted_tags(driver: StorageDriver) -> None:  # noqa: F811
    rng = random.Random(3)
    if hasattr(driver, "children_page"):
        driver.children_page = 4
    chars = "abcXY019_.-"
    tags = {"latest", "1.0", "1.0-rc", "1.0.1", "1.0_1", "1-0", "_x", "A", "a"}
    while len(tags) < 80:
        tags.add(rng.choice("ab0_X") + "".join(rng.choice(chars) for _ in range(rng.randint(0, 4))))
    ordered = sorted(tags)
    for tag in ordered:
        driver.put_content(layout.tag_current_link("some/repo", tag), DIGEST.encode())
    manifests = Manifests(driver, Blobs(driver))
    assert manifests.list_tags("some/repo", "", 0).names == ordered
    for limit in (1, 3, 10):
        assert follow(lambda last, n: manifests.list_tags("some/repo", last, n), limit) == ordered
    for last in [*ordered, "0", "1.0-", "zzz"]:
        page = manifests.list_tags("some/repo", last, 5)
        assert page.names == [t for t in ordered if t > last][:5], last
    with pytest.raises(RegistryError):
        manifests.list_tags("other/repo", "", 5)
    driver.put_content(layout.layer_link("blobs/only", DIGEST), DIGEST.encode())
    assert manifests.list_tags("blobs/only", "", 5).names == []
    assert manifests.list_tags("blobs/only", "x", 5).names == []
