"""validation.manifests: sparse manifests, and which children of an index must exist
(registry:2 3.x's indexes.platforms). The default (strict) is pinned in test_manifests.py."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.images import OCI_INDEX, OCI_MANIFEST, sha256
from tests.support.processes import Berth
from tests.support.registry import checked_client, descriptor, image_manifest, push_blob, put_manifest


def registry(tmp_path_factory: pytest.TempPathFactory, **env: str) -> Iterator[httpx.Client]:
    berth = Berth(tmp_path_factory.mktemp("berth-validation"), env=env).start()
    try:
        with checked_client(berth.url) as client:
            yield client
    finally:
        berth.stop()


@pytest.fixture(scope="module")
def sparse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    yield from registry(tmp_path_factory, REGISTRY_VALIDATION_MANIFESTS_SPARSE="true")


@pytest.fixture(scope="module")
def listed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    yield from registry(
        tmp_path_factory,
        REGISTRY_VALIDATION_MANIFESTS_INDEXES_PLATFORMS="list",
        REGISTRY_VALIDATION_MANIFESTS_INDEXES_PLATFORMLIST="[{os: linux, architecture: amd64}]",
    )


@pytest.fixture(scope="module")
def no_children(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    yield from registry(tmp_path_factory, REGISTRY_VALIDATION_MANIFESTS_INDEXES_PLATFORMS="none")


def child(os_: str, arch: str, manifest: bytes) -> dict:
    return {**descriptor(OCI_MANIFEST, manifest), "platform": {"os": os_, "architecture": arch}}


def index_of(*children: dict) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(children)}).encode()


def image(seed: str) -> bytes:
    return json.dumps(image_manifest(f'{{"seed": "{seed}"}}'.encode(), [f"layer {seed}".encode()])).encode()


def test_sparse_image_and_index_are_accepted_and_served_byte_for_byte(sparse: httpx.Client) -> None:
    payload = image("nothing pushed")
    assert put_manifest(sparse, "sparse/app", "v1", payload).status_code == 201
    got = sparse.get("/v2/sparse/app/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert got.status_code == 200 and got.content == payload
    assert got.headers["docker-content-digest"] == sha256(payload)
    missing_layer = json.loads(payload)["layers"][0]["digest"]
    blob = sparse.get(f"/v2/sparse/app/blobs/{missing_layer}")
    assert blob.status_code == 404 and blob.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    index = index_of(child("linux", "amd64", image("a")), child("linux", "arm64", image("b")))
    assert put_manifest(sparse, "sparse/app", "multi", index, OCI_INDEX).status_code == 201
    assert sparse.get("/v2/sparse/app/manifests/multi", headers={"Accept": OCI_INDEX}).content == index


def test_platform_list_requires_only_the_listed_children(listed: httpx.Client) -> None:
    repo = "listed/app"
    amd64 = image("amd64")
    for blob in (b'{"seed": "amd64"}', b"layer amd64"):
        push_blob(listed, repo, blob)
    arm64 = image("arm64")  # never pushed, nor its blobs
    index = index_of(child("linux", "amd64", amd64), child("linux", "arm64", arm64))
    refused = put_manifest(listed, repo, "v1", index, OCI_INDEX)
    assert refused.status_code == 400 and refused.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
    assert sha256(amd64) in refused.text and sha256(arm64) not in refused.text
    assert put_manifest(listed, repo, sha256(amd64), amd64).status_code == 201
    assert put_manifest(listed, repo, "v1", index, OCI_INDEX).status_code == 201
    # Image manifests stay strict: only an index's children are chosen by platform.
    assert put_manifest(listed, repo, "lonely", arm64).status_code == 400


def test_platforms_none_requires_no_children_but_keeps_images_strict(no_children: httpx.Client) -> None:
    index = index_of(child("linux", "amd64", image("x")), child("windows", "amd64", image("y")))
    assert put_manifest(no_children, "none/app", "v1", index, OCI_INDEX).status_code == 201
    assert put_manifest(no_children, "none/app", "img", image("z")).status_code == 400
