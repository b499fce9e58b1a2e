"""manifests.Manifests over the in-memory driver: pushes check what they reference before writing
anything, tags are links to revisions, deletes of manifests, tags and referrer entries.
(Locking: test_manifest_locking.py; listing order: the listing tests.)"""

from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.blobstore import layout
from services.blobstore.blobs import Blobs
from services.blobstore.drivers import PathNotFound, StorageDriver, create
from services.blobstore.manifests import Manifests
from services.common.errors import (
    DIGEST_INVALID,
    MANIFEST_BLOB_UNKNOWN,
    MANIFEST_UNKNOWN,
    NAME_INVALID,
    NAME_UNKNOWN,
    TAG_INVALID,
    RegistryError,
)

REPO, OTHER = "manifests/app", "manifests/other"


def manifest(n: int, algorithm: str = "sha256") -> tuple[str, bytes]:
    payload = json.dumps({"schemaVersion": 2, "n": n}).encode()
    return f"{algorithm}:{hashlib.new(algorithm, payload).hexdigest()}", payload


M1, P1 = manifest(1)
M2, P2 = manifest(2)
M3, P3 = manifest(3, "sha512")
LAYER = b"layer bytes"
LAYER_DIGEST = "sha256:" + hashlib.sha256(LAYER).hexdigest()


@pytest.fixture()
def driver() -> StorageDriver:
    return create("inmemory", {})


@pytest.fixture()
def manifests(driver: StorageDriver) -> Manifests:
    return Manifests(driver, Blobs(driver))


def code_of(call: object) -> object:
    with pytest.raises(RegistryError) as caught:
        call()  # type: ignore[operator]
    return caught.value.code


def files(driver: StorageDriver) -> set[str]:
    return set(driver._files)  # type: ignore[attr-defined]


def with_layer(driver: StorageDriver, repo: str = REPO) -> None:
    driver.put_content(layout.blob_data(LAYER_DIGEST), LAYER)
    Blobs(driver).link(repo, LAYER_DIGEST)


def test_a_push_is_readable_by_digest_and_tag(driver: StorageDriver, manifests: Manifests) -> None:
    with_layer(driver)
    manifests.put(REPO, M1, P1, tags=["latest", "v1"], required_blobs=[LAYER_DIGEST])
    for reference in (M1, "latest", "v1"):
        found = manifests.get(REPO, reference)
        assert (found.digest, found.payload) == (M1, P1)
    assert manifests.resolve_tag(REPO, "v1") == M1
    assert driver.get_content(layout.revision_link(REPO, M1)) == M1.encode()
    assert driver.get_content(layout.tag_current_link(REPO, "latest")) == M1.encode()
    assert driver.get_content(layout.tag_index_link(REPO, "latest", M1)) == M1.encode()
    assert driver.get_content(layout.blob_data(M1)) == P1
    assert sorted(manifests.tags(REPO)) == ["latest", "v1"]


def test_sha512_manifests(manifests: Manifests) -> None:
    manifests.put(REPO, M1, P1)  # keeps the repository after the delete
    manifests.put(REPO, M3, P3, tags=["five-twelve"])
    assert manifests.get(REPO, "five-twelve").digest == M3
    assert manifests.get(REPO, M3).payload == P3
    manifests.delete(REPO, M3)
    assert code_of(lambda: manifests.get(REPO, M3)) is MANIFEST_UNKNOWN


@pytest.mark.parametrize("kind", ["blob", "manifest", "blob of another repository"])
def test_a_push_missing_what_it_references_writes_nothing(driver: StorageDriver, manifests: Manifests, kind: str) -> None:
    if kind == "blob of another repository":
        with_layer(driver, OTHER)
    before = files(driver)
    kwargs = {"required_manifests": [M2, M2]} if kind == "manifest" else {"required_blobs": [LAYER_DIGEST, LAYER_DIGEST]}
    with pytest.raises(RegistryError) as caught:
        manifests.put(REPO, M1, P1, tags=["latest"], subject=M2, referrer_descriptor=b"{}", **kwargs)  # type: ignore[arg-type]
    assert caught.value.code is MANIFEST_BLOB_UNKNOWN
    assert caught.value.detail["digests"] == [M2 if kind == "manifest" else LAYER_DIGEST]  # named once
    assert files(driver) == before


def test_a_push_whose_blob_content_was_collected_fails(driver: StorageDriver, manifests: Manifests) -> None:
    with_layer(driver)
    driver.delete(layout.blob_data(LAYER_DIGEST))  # the link outlived the content
    assert code_of(lambda: manifests.put(REPO, M1, P1, tags=["t"], required_blobs=[LAYER_DIGEST])) is MANIFEST_BLOB_UNKNOWN
    assert code_of(lambda: manifests.get(REPO, "t")) is MANIFEST_UNKNOWN
    with pytest.raises(PathNotFound):
        driver.get_content(layout.revision_link(REPO, M1))


def test_a_manifest_may_reference_a_manifest_of_its_repository(manifests: Manifests) -> None:
    manifests.put(REPO, M2, P2)
    manifests.put(REPO, M1, P1, required_manifests=[M2])
    assert manifests.get(REPO, M1).payload == P1
    assert code_of(lambda: manifests.put(OTHER, M1, P1, required_manifests=[M2])) is MANIFEST_BLOB_UNKNOWN


@pytest.mark.parametrize("tags", [["ok", "../escape"], ["ok", ".hidden"], ["x" * 129]])
def test_a_bad_tag_fails_the_push_before_anything_is_written(driver: StorageDriver, manifests: Manifests, tags: list[str]) -> None:
    before = files(driver)
    assert code_of(lambda: manifests.put(REPO, M1, P1, tags=tags)) is TAG_INVALID
    assert files(driver) == before


def test_the_stored_bytes_are_not_rewritten(driver: StorageDriver, manifests: Manifests) -> None:
    manifests.put(OTHER, M1, P1)
    manifests.put(REPO, M1, b"other bytes under the same digest")  # the gateway checks digests; we keep the first
    assert manifests.get(REPO, M1).payload == P1


def test_unknown_references(driver: StorageDriver, manifests: Manifests) -> None:
    assert code_of(lambda: manifests.get(REPO, "latest")) is NAME_UNKNOWN
    assert code_of(lambda: manifests.get(REPO, M1)) is NAME_UNKNOWN
    manifests.put(REPO, M1, P1, tags=["latest"])
    assert code_of(lambda: manifests.get(REPO, "nope")) is MANIFEST_UNKNOWN
    assert code_of(lambda: manifests.get(REPO, M2)) is MANIFEST_UNKNOWN
    manifests.put(OTHER, M2, P2)
    assert code_of(lambda: manifests.get(REPO, M2)) is MANIFEST_UNKNOWN  # stored, but not in this repository
    driver.delete(layout.blob_data(M1))
    assert code_of(lambda: manifests.get(REPO, "latest")) is MANIFEST_UNKNOWN  # revision left, content gone
    assert code_of(lambda: manifests.get(REPO, "sha256:nothex")) is DIGEST_INVALID
    assert code_of(lambda: manifests.get("Bad/Name", "latest")) is NAME_INVALID
    assert code_of(lambda: manifests.get(REPO, "bad tag")) is TAG_INVALID


def test_a_tag_moves_and_its_index_keeps_every_digest(driver: StorageDriver, manifests: Manifests) -> None:
    manifests.put(REPO, M1, P1, tags=["latest"])
    manifests.put(REPO, M2, P2, tags=["latest"])
    assert manifests.get(REPO, "latest").digest == M2
    assert manifests.get(REPO, M1).payload == P1  # still there by digest
    index = driver.list(f"{layout.tag_dir(REPO, 'latest')}/index/sha256")
    assert sorted(p.rsplit("/", 1)[1] for p in index) == sorted(d.split(":")[1] for d in (M1, M2))


def test_deleting_a_manifest_removes_the_tags_pointing_at_it(driver: StorageDriver, manifests: Manifests) -> None:
    manifests.put(REPO, M1, P1, tags=["a", "b"])
    manifests.put(REPO, M2, P2, tags=["c"])
    manifests.put(OTHER, M1, P1, tags=["a"])
    manifests.delete(REPO, M1)
    assert code_of(lambda: manifests.get(REPO, M1)) is MANIFEST_UNKNOWN
    assert code_of(lambda: manifests.get(REPO, "a")) is MANIFEST_UNKNOWN
    assert sorted(manifests.tags(REPO)) == ["c"]
    assert manifests.get(REPO, "c").digest == M2
    assert manifests.get(OTHER, "a").digest == M1  # another repository's revision and tag stay
    assert driver.get_content(layout.blob_data(M1)) == P1  # the bytes are garbage collection's to remove
    assert code_of(lambda: manifests.delete(REPO, M1)) is MANIFEST_UNKNOWN  # twice


def test_deleting_a_manifest_a_moved_tag_once_named_keeps_the_tag(manifests: Manifests) -> None:
    manifests.put(REPO, M1, P1, tags=["latest"])
    manifests.put(REPO, M2, P2, tags=["latest"])
    manifests.delete(REPO, M1)
    assert manifests.get(REPO, "latest").digest == M2


def test_delete_refusals(manifests: Manifests) -> None:
    assert code_of(lambda: manifests.delete(REPO, M1)) is NAME_UNKNOWN
    manifests.put(REPO, M2, P2)
    assert code_of(lambda: manifests.delete(REPO, M1)) is MANIFEST_UNKNOWN
    assert code_of(lambda: manifests.delete(REPO, "latest")) is DIGEST_INVALID  # by digest only
    assert code_of(lambda: manifests.delete(REPO, "sha256:" + "0" * 63)) is DIGEST_INVALID
    assert code_of(lambda: manifests.delete("../x", M2)) is NAME_INVALID


def test_deleting_a_tag_keeps_the_manifest(manifests: Manifests) -> None:
    manifests.put(REPO, M1, P1, tags=["a", "b"])
    manifests.delete_tag(REPO, "a")
    assert code_of(lambda: manifests.get(REPO, "a")) is MANIFEST_UNKNOWN
    assert manifests.get(REPO, "b").digest == M1
    assert manifests.get(REPO, M1).payload == P1
    assert manifests.tags(REPO) == ["b"]
    assert code_of(lambda: manifests.delete_tag(REPO, "a")) is MANIFEST_UNKNOWN  # twice
    assert code_of(lambda: manifests.delete_tag(REPO, "../b")) is TAG_INVALID
    assert code_of(lambda: manifests.delete_tag(OTHER, "b")) is NAME_UNKNOWN


def test_tags_of_a_repository_without_any(driver: StorageDriver, manifests: Manifests) -> None:
    assert code_of(lambda: manifests.tags(REPO)) is NAME_UNKNOWN
    manifests.put(REPO, M1, P1)
    assert manifests.tags(REPO) == []
    manifests.put(REPO, M2, P2, tags=["only"])
    manifests.delete_tag(REPO, "only")
    assert manifests.tags(REPO) == []


def test_referrers_are_listed_by_subject_and_go_with_their_manifest(manifests: Manifests) -> None:
    manifests.put(REPO, M3, P3, tags=["subject"])
    assert manifests.referrers(REPO, M3) == []
    assert manifests.referrers(OTHER, M3) == []
    manifests.put(REPO, M1, P1, subject=M3, referrer_descriptor=b'{"d":1}')
    manifests.put(REPO, M2, P2, subject=M3, referrer_descriptor=b'{"d":2}')
    assert sorted(manifests.referrers(REPO, M3)) == [b'{"d":1}', b'{"d":2}']
    assert manifests.referrers(OTHER, M3) == []  # a repository's own
    manifests.delete(REPO, M1, subject=M3)
    assert manifests.referrers(REPO, M3) == [b'{"d":2}']
    manifests.delete(REPO, M3)  # the subject's own deletion leaves its referrers (registry:2 keeps them too)
    assert manifests.referrers(REPO, M3) == [b'{"d":2}']
    assert code_of(lambda: manifests.referrers(REPO, "sha256:x")) is DIGEST_INVALID


def test_a_push_during_garbage_collection_names_what_it_references(driver: StorageDriver, manifests: Manifests) -> None:
    with_layer(driver)
    manifests.put(REPO, M2, P2)
    driver.put_content(layout.GC_STATE, b"{}")
    manifests.put(REPO, M1, P1, required_blobs=[LAYER_DIGEST], required_manifests=[M2])
    for digest in (M1, LAYER_DIGEST, M2):
        assert driver.file_size(layout.gc_live(digest)) == 0
    driver.delete(layout.GC_STATE)
    manifests.put(REPO, M3, P3)
    assert driver.file_size(layout.gc_live(M3)) is None  # no collection: no record


def test_concurrent_pushes_of_one_digest_and_of_one_tag(manifests: Manifests) -> None:
    tags = [f"t{i}" for i in range(16)]
    start = threading.Barrier(16)

    def push(i: int) -> None:
        start.wait()
        digest, payload = (M1, P1) if i % 2 else (M2, P2)
        manifests.put(REPO, digest, payload, tags=[tags[i], "shared"])

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(push, range(16)))
    for i, tag in enumerate(tags):
        assert manifests.get(REPO, tag).digest == (M1 if i % 2 else M2)
    assert manifests.get(REPO, "shared").digest in (M1, M2)
    assert sorted(manifests.tags(REPO)) == sorted([*tags, "shared"])
