"""Manifests by tag and digest: /v2/<name>/manifests/<reference>, for the four types Berth stores."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx
import pytest

from tests.images import OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, sha256
from tests.support.registry import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    EMPTY_CONFIG,
    OCI_EMPTY,
    assert_error,
    descriptor,
    image_manifest,
    push_blob,
    push_image,
    push_manifest,
    put_manifest,
)

MiB = 1 << 20


def _blobs(client: httpx.Client, repo: str, seed: str) -> tuple[bytes, bytes]:
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    layer = f"layer {seed}".encode()
    push_blob(client, repo, config)
    push_blob(client, repo, layer)
    return config, layer


def oci_image(client: httpx.Client, repo: str, seed: str = "oci") -> bytes:
    config, layer = _blobs(client, repo, seed)
    return json.dumps(image_manifest(config, [layer])).encode()


def docker_image(client: httpx.Client, repo: str, seed: str = "docker") -> bytes:
    config, layer = _blobs(client, repo, seed)
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": descriptor(DOCKER_CONFIG, config),
            "layers": [descriptor(DOCKER_LAYER, layer)],
        }
    ).encode()


def _index(client: httpx.Client, repo: str, media_type: str, child: Callable[..., bytes], child_type: str) -> bytes:
    children = []
    for arch in ("amd64", "arm64"):
        payload = child(client, repo, f"{media_type}-{arch}")
        push_manifest(client, repo, sha256(payload), payload, child_type)
        children.append(descriptor(child_type, payload, platform={"architecture": arch, "os": "linux"}))
    return json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": children}).encode()


def oci_index(client: httpx.Client, repo: str) -> bytes:
    return _index(client, repo, OCI_INDEX, oci_image, OCI_MANIFEST)


def docker_list(client: httpx.Client, repo: str) -> bytes:
    return _index(client, repo, DOCKER_MANIFEST_LIST, docker_image, DOCKER_MANIFEST)


KINDS = {
    OCI_MANIFEST: oci_image,
    OCI_INDEX: oci_index,
    DOCKER_MANIFEST: docker_image,
    DOCKER_MANIFEST_LIST: docker_list,
}


@pytest.fixture(params=list(KINDS), ids=["oci-image", "oci-index", "docker-image", "docker-list"])
def manifest(request, client, repo) -> tuple[str, bytes]:
    """(media type, payload) of a manifest whose blobs and children are already in ``repo``."""
    media_type = request.param
    return media_type, KINDS[media_type](client, repo)


def assert_manifest(r: httpx.Response, media_type: str, payload: bytes, *, body: bool = True) -> None:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == media_type
    assert r.headers["docker-content-digest"] == sha256(payload)
    assert r.headers["content-length"] == str(len(payload))
    assert r.content == (payload if body else b"")


def assert_absent(client: httpx.Client, repo: str, reference: str) -> None:
    assert_error(client.get(f"/v2/{repo}/manifests/{reference}"), 404, "MANIFEST_UNKNOWN")
    assert client.head(f"/v2/{repo}/manifests/{reference}").status_code == 404


# Round trips, for every type


def test_put_by_tag_then_get_and_head(client, repo, manifest):
    media_type, payload = manifest
    r = put_manifest(client, repo, "v1", payload, media_type)
    assert r.status_code == 201
    digest = sha256(payload)
    assert r.headers["docker-content-digest"] == digest
    assert urlsplit(r.headers["location"]).path == f"/v2/{repo}/manifests/{digest}"
    for reference in ("v1", digest):
        assert_manifest(client.get(f"/v2/{repo}/manifests/{reference}"), media_type, payload)
        assert_manifest(client.head(f"/v2/{repo}/manifests/{reference}"), media_type, payload, body=False)


def test_put_by_digest_then_get(client, repo, manifest):
    media_type, payload = manifest
    digest = sha256(payload)
    r = put_manifest(client, repo, digest, payload, media_type)
    assert r.status_code == 201
    assert r.headers["docker-content-digest"] == digest
    assert_manifest(client.get(f"/v2/{repo}/manifests/{digest}"), media_type, payload)
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == []


def test_delete_by_digest(client, repo, manifest):
    media_type, payload = manifest
    digest, _ = push_manifest(client, repo, "v1", payload, media_type)
    r = client.delete(f"/v2/{repo}/manifests/{digest}")
    assert r.status_code == 202
    assert_absent(client, repo, digest)
    assert_absent(client, repo, "v1")
    assert_error(client.delete(f"/v2/{repo}/manifests/{digest}"), 404, "MANIFEST_UNKNOWN")


def test_delete_by_tag(client, repo, manifest):
    media_type, payload = manifest
    digest, _ = push_manifest(client, repo, "v1", payload, media_type)
    assert client.delete(f"/v2/{repo}/manifests/v1").status_code == 202
    assert_absent(client, repo, "v1")
    assert_manifest(client.get(f"/v2/{repo}/manifests/{digest}"), media_type, payload)
    assert_error(client.delete(f"/v2/{repo}/manifests/v1"), 404, "MANIFEST_UNKNOWN")


def test_exact_bytes_are_kept(client, repo):
    """Whitespace, key order and unknown fields are the client's business: stored as sent."""
    config, layer = _blobs(client, repo, "exact")
    doc = image_manifest(config, [layer], annotations={"z": "1", "a": "2"})
    payload = ("\n  " + json.dumps(doc, indent=7, sort_keys=False) + "\n\n").encode()
    push_manifest(client, repo, "v1", payload, OCI_MANIFEST)
    assert_manifest(client.get(f"/v2/{repo}/manifests/v1"), OCI_MANIFEST, payload)


def test_manifest_without_layers_is_accepted(client, repo):
    config = push_blob(client, repo, b'{"architecture": "amd64", "os": "linux"}')
    doc = image_manifest(b'{"architecture": "amd64", "os": "linux"}', [])
    assert doc["config"]["digest"] == config and doc["layers"] == []
    _digest, payload = push_manifest(client, repo, "empty", doc)
    assert_manifest(client.get(f"/v2/{repo}/manifests/empty"), OCI_MANIFEST, payload)


def test_manifest_of_another_repository_is_not_readable(client, repo):
    digest, _ = push_image(client, repo, "v1")
    other = f"{repo}-other"
    push_image(client, other, "v1")
    assert_absent(client, other, digest)


def test_retagging_moves_the_tag(client, repo):
    first, _ = push_image(client, repo, "latest", layers=[b"one"])
    second, payload = push_image(client, repo, "latest", layers=[b"two"])
    assert first != second
    assert client.get(f"/v2/{repo}/manifests/latest").content == payload
    assert client.get(f"/v2/{repo}/manifests/{first}").status_code == 200


def test_content_type_parameters_are_ignored(client, repo):
    payload = oci_image(client, repo)
    r = put_manifest(client, repo, "v1", payload, f"{OCI_MANIFEST}; charset=utf-8")
    assert r.status_code == 201
    assert client.get(f"/v2/{repo}/manifests/v1").headers["content-type"] == OCI_MANIFEST


def test_manifest_without_media_type_field_is_served_as_pushed(client, repo):
    config, layer = _blobs(client, repo, "no-field")
    doc = image_manifest(config, [layer])
    del doc["mediaType"]
    payload = json.dumps(doc).encode()
    push_manifest(client, repo, "v1", payload, OCI_MANIFEST)
    assert_manifest(client.get(f"/v2/{repo}/manifests/v1"), OCI_MANIFEST, payload)


# Content negotiation


def test_accept_listing_only_other_types_is_404(client, repo):
    push_manifest(client, repo, "v1", oci_image(client, repo), OCI_MANIFEST)
    accept = f"{DOCKER_MANIFEST}, {DOCKER_MANIFEST_LIST}"
    for method in ("GET", "HEAD"):
        r = client.request(method, f"/v2/{repo}/manifests/v1", headers={"Accept": accept})
        assert r.status_code == 404
    assert_error(client.get(f"/v2/{repo}/manifests/v1", headers={"Accept": accept}), 404, "MANIFEST_UNKNOWN")


@pytest.mark.parametrize("accept", ["*/*", "application/*", f"{DOCKER_MANIFEST}, {OCI_MANIFEST};q=0.9", f"{OCI_MANIFEST}"])
def test_accept_including_the_type(client, repo, accept):
    payload = oci_image(client, repo)
    push_manifest(client, repo, "v1", payload, OCI_MANIFEST)
    assert_manifest(client.get(f"/v2/{repo}/manifests/v1", headers={"Accept": accept}), OCI_MANIFEST, payload)


def test_accept_over_several_headers(client, repo):
    """Docker sends one Accept header per type."""
    payload = docker_image(client, repo)
    push_manifest(client, repo, "v1", payload, DOCKER_MANIFEST)
    headers = [("Accept", OCI_MANIFEST), ("Accept", DOCKER_MANIFEST)]
    assert_manifest(client.get(f"/v2/{repo}/manifests/v1", headers=headers), DOCKER_MANIFEST, payload)


def test_no_accept_header(client, repo):
    payload = oci_image(client, repo)
    push_manifest(client, repo, "v1", payload, OCI_MANIFEST)
    request = client.build_request("GET", f"/v2/{repo}/manifests/v1")
    del request.headers["accept"]
    assert_manifest(client.send(request), OCI_MANIFEST, payload)


# Digests


def test_put_by_digest_that_does_not_match_is_400(client, repo):
    payload = oci_image(client, repo)
    wrong = sha256(payload + b" ")
    assert_error(put_manifest(client, repo, wrong, payload), 400, "DIGEST_INVALID")
    assert_absent(client, repo, wrong)
    assert_absent(client, repo, sha256(payload))


def test_sha512_digest_reference(client, repo):
    payload = oci_image(client, repo)
    digest = "sha512:" + hashlib.sha512(payload).hexdigest()
    r = put_manifest(client, repo, digest, payload)
    assert r.status_code == 201
    assert r.headers["docker-content-digest"] == digest
    r = client.get(f"/v2/{repo}/manifests/{digest}")
    assert (r.status_code, r.content, r.headers["docker-content-digest"]) == (200, payload, digest)
    assert client.head(f"/v2/{repo}/manifests/{digest}").status_code == 200


@pytest.mark.parametrize("reference", ["sha256:abc", "md5:" + "0" * 32, "sha256:" + "G" * 64])
def test_malformed_digest_reference_is_400(client, repo, reference):
    push_image(client, repo, "v1")
    assert_error(client.get(f"/v2/{repo}/manifests/{reference}"), 400, "DIGEST_INVALID")


# Invalid manifests


def test_media_type_not_matching_content_type_is_400(client, repo):
    payload = oci_image(client, repo)
    assert_error(put_manifest(client, repo, "v1", payload, DOCKER_MANIFEST), 400, "MANIFEST_INVALID")
    assert_absent(client, repo, "v1")


@pytest.mark.parametrize(
    "payload",
    [b"{not json", b"[]", b'"a string"', b"\xff\xfe", b""],
    ids=["broken", "array", "string", "not-utf8", "empty"],
)
def test_malformed_manifest_is_400(client, repo, payload):
    push_image(client, repo, "existing")
    assert_error(put_manifest(client, repo, "v1", payload), 400, "MANIFEST_INVALID")


def test_schema_version_1_is_400(client, repo):
    payload = json.dumps(
        {
            "schemaVersion": 1,
            "name": repo,
            "tag": "v1",
            "architecture": "amd64",
            "fsLayers": [{"blobSum": sha256(b"layer")}],
            "history": [{"v1Compatibility": "{}"}],
        }
    ).encode()
    r = put_manifest(client, repo, "v1", payload, "application/vnd.docker.distribution.manifest.v1+prettyjws")
    assert_error(r, 400, "MANIFEST_INVALID")


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.pop("config"),
        lambda m: m["config"].update(digest="sha256:short"),
        lambda m: m["layers"][0].update(size=-1),
        lambda m: m["layers"][0].pop("mediaType"),
        lambda m: m.update(layers={"not": "a list"}),
        lambda m: m.update(annotations={"n": 1}),
    ],
    ids=["no-config", "bad-digest", "negative-size", "no-media-type", "layers-not-list", "annotation-not-string"],
)
def test_structurally_invalid_manifest_is_400(client, repo, change):
    doc = json.loads(oci_image(client, repo))
    change(doc)
    assert_error(put_manifest(client, repo, "v1", json.dumps(doc).encode()), 400, "MANIFEST_INVALID")


def test_missing_blob_is_400_manifest_blob_unknown(client, repo):
    config, layer = _blobs(client, repo, "present")
    missing = b"a layer nobody pushed"
    payload = json.dumps(image_manifest(config, [layer, missing])).encode()
    error = assert_error(put_manifest(client, repo, "v1", payload), 400, "MANIFEST_BLOB_UNKNOWN")
    assert sha256(missing) in json.dumps(error.get("detail"))
    assert_absent(client, repo, "v1")


def test_missing_config_is_400_manifest_blob_unknown(client, repo):
    layer = push_blob(client, repo, b"only the layer")
    doc = image_manifest(b'{"not": "pushed"}', [])
    doc["layers"] = [{"mediaType": OCI_LAYER, "digest": layer, "size": len(b"only the layer")}]
    assert_error(put_manifest(client, repo, "v1", json.dumps(doc).encode()), 400, "MANIFEST_BLOB_UNKNOWN")


def test_blob_only_in_another_repository_is_400(client, repo):
    payload = oci_image(client, f"{repo}-other")
    assert_error(put_manifest(client, repo, "v1", payload), 400, "MANIFEST_BLOB_UNKNOWN")


def test_index_with_missing_child_is_400(client, repo):
    present = oci_image(client, repo, "present")
    push_manifest(client, repo, sha256(present), present)
    absent = oci_image(client, repo, "absent")  # its blobs are there, the manifest is not
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor(OCI_MANIFEST, present), descriptor(OCI_MANIFEST, absent)]}
    error = assert_error(put_manifest(client, repo, "v1", json.dumps(index).encode(), OCI_INDEX), 400, "MANIFEST_BLOB_UNKNOWN")
    assert sha256(absent) in json.dumps(error.get("detail"))


def test_child_in_another_repository_is_400(client, repo):
    other = f"{repo}-other"
    child = oci_image(client, other)
    push_manifest(client, other, "v1", child)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor(OCI_MANIFEST, child)]}
    assert_error(put_manifest(client, repo, "v1", json.dumps(index).encode(), OCI_INDEX), 400, "MANIFEST_BLOB_UNKNOWN")


@pytest.mark.parametrize(
    ("media_type", "layer_type", "urls"),
    [
        (DOCKER_MANIFEST, "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", ["https://example.com/layer.tar.gz"]),
        (OCI_MANIFEST, "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", []),
        (OCI_MANIFEST, OCI_LAYER, ["https://example.com/layer.tar.gz"]),
    ],
    ids=["docker-foreign", "oci-nondistributable", "oci-with-urls"],
)
def test_foreign_layer_may_be_absent(client, repo, media_type, layer_type, urls):
    config, layer = _blobs(client, repo, "foreign")
    foreign = descriptor(layer_type, b"held elsewhere", **({"urls": urls} if urls else {}))
    doc = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor(DOCKER_CONFIG if media_type == DOCKER_MANIFEST else OCI_CONFIG, config),
        "layers": [foreign, descriptor(DOCKER_LAYER if media_type == DOCKER_MANIFEST else OCI_LAYER, layer)],
    }
    _digest, payload = push_manifest(client, repo, "v1", doc)
    assert_manifest(client.get(f"/v2/{repo}/manifests/v1"), media_type, payload)


# Size


def _padded(client: httpx.Client, repo: str, size: int) -> bytes:
    """A valid image manifest of exactly ``size`` bytes (padded with an annotation)."""
    doc = json.loads(oci_image(client, repo))
    doc["annotations"] = {"pad": ""}
    base = len(json.dumps(doc).encode())
    doc["annotations"]["pad"] = "x" * (size - base)
    payload = json.dumps(doc).encode()
    assert len(payload) == size
    return payload


def test_manifest_of_4_mib_is_accepted(client, repo):
    payload = _padded(client, repo, 4 * MiB)
    push_manifest(client, repo, "v1", payload)
    assert client.get(f"/v2/{repo}/manifests/v1").content == payload


def test_manifest_over_4_mib_is_413(client, repo):
    payload = _padded(client, repo, 4 * MiB + 1)
    r = put_manifest(client, repo, "v1", payload)
    assert_error(r, 413, "MANIFEST_INVALID")
    assert_absent(client, repo, "v1")


def test_manifest_over_4_mib_without_content_length_is_413(client, repo):
    payload = _padded(client, repo, 4 * MiB + 1)

    def chunked():
        for i in range(0, len(payload), 64 * 1024):
            yield payload[i : i + 64 * 1024]

    r = client.put(f"/v2/{repo}/manifests/v1", content=chunked(), headers={"Content-Type": OCI_MANIFEST})
    assert_error(r, 413, "MANIFEST_INVALID")


# Tags and references


INVALID_TAGS = ["-bad", ".bad", "a" * 129, "bad~tag", "bad+tag", ".INVALID_MANIFEST_NAME"]


@pytest.mark.parametrize("tag", INVALID_TAGS)
def test_pushing_an_invalid_tag_is_400(client, repo, tag):
    payload = oci_image(client, repo)
    assert_error(put_manifest(client, repo, tag, payload), 400, "TAG_INVALID")


@pytest.mark.parametrize("tag", [*INVALID_TAGS, "x" * 5000])
def test_reading_or_deleting_an_invalid_tag_is_404(client, repo, tag):
    """A reference that is neither a tag nor a digest names no manifest: 404 MANIFEST_UNKNOWN, as
    readers and the conformance suite (``.INVALID_MANIFEST_NAME``) expect, and for a delete too."""
    push_image(client, repo, "v1")
    assert_absent(client, repo, tag)
    assert_error(client.delete(f"/v2/{repo}/manifests/{tag}"), 404, "MANIFEST_UNKNOWN")
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["v1"]


@pytest.mark.parametrize("tag", ["a" * 128, "_under", "UPPER.lower-1_2", "0"])
def test_valid_tags(client, repo, tag):
    payload = oci_image(client, repo)
    push_manifest(client, repo, tag, payload)
    assert client.get(f"/v2/{repo}/manifests/{tag}").content == payload


def test_delete_by_digest_removes_every_tag_on_it(client, repo):
    payload = oci_image(client, repo)
    digest, _ = push_manifest(client, repo, "one", payload)
    push_manifest(client, repo, "two", payload)
    other, _ = push_image(client, repo, "other")
    assert client.delete(f"/v2/{repo}/manifests/{digest}").status_code == 202
    assert_absent(client, repo, "one")
    assert_absent(client, repo, "two")
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["other"]
    assert client.get(f"/v2/{repo}/manifests/{other}").status_code == 200


def test_deleting_a_tag_leaves_the_manifest_and_other_tags(client, repo):
    payload = oci_image(client, repo)
    digest, _ = push_manifest(client, repo, "one", payload)
    push_manifest(client, repo, "two", payload)
    assert client.delete(f"/v2/{repo}/manifests/one").status_code == 202
    assert client.get(f"/v2/{repo}/manifests/{digest}").content == payload
    assert client.get(f"/v2/{repo}/manifests/two").content == payload
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["two"]


def test_unknown_manifest_is_404(client, repo):
    push_image(client, repo, "v1")
    assert_absent(client, repo, "v2")
    assert_absent(client, repo, sha256(b"no such manifest"))
    assert_error(client.delete(f"/v2/{repo}/manifests/{sha256(b'no such manifest')}"), 404, "MANIFEST_UNKNOWN")


def test_unknown_repository_is_404_name_unknown(client):
    name = "test_manifests/never-pushed"
    assert_error(client.get(f"/v2/{name}/manifests/v1"), 404, "NAME_UNKNOWN")
    assert_error(client.get(f"/v2/{name}/manifests/{sha256(b'x')}"), 404, "NAME_UNKNOWN")
    assert client.head(f"/v2/{name}/manifests/v1").status_code == 404
    assert_error(client.delete(f"/v2/{name}/manifests/v1"), 404, "NAME_UNKNOWN")
    assert_error(client.delete(f"/v2/{name}/manifests/{sha256(b'x')}"), 404, "NAME_UNKNOWN")


# Tags pushed with a digest (newest spec): PUT /v2/<name>/manifests/<digest>?tag=a&tag=b


def sha512(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


def put_with_tags(
    client: httpx.Client, repo: str, digest: str, payload: bytes, tags: list[str], media_type: str = OCI_MANIFEST
) -> httpx.Response:
    return client.put(
        f"/v2/{repo}/manifests/{digest}", params=[("tag", t) for t in tags], content=payload, headers={"Content-Type": media_type}
    )


def tags_of(client: httpx.Client, repo: str) -> list[str]:
    r = client.get(f"/v2/{repo}/tags/list")
    return r.json()["tags"] if r.status_code == 200 else []


def test_push_by_digest_tags_every_listed_tag(client, repo, manifest):
    media_type, payload = manifest
    tags = [f"v{i}" for i in range(12)]  # more than the 10 the spec asks registries to accept
    r = put_with_tags(client, repo, sha256(payload), payload, tags, media_type)
    assert r.status_code == 201, r.text
    assert r.headers.get_list("oci-tag") == tags
    assert r.headers["docker-content-digest"] == sha256(payload)
    for tag in tags:
        assert_manifest(client.get(f"/v2/{repo}/manifests/{tag}"), media_type, payload)
    assert tags_of(client, repo) == sorted(tags)


def test_push_by_digest_without_tags_has_no_oci_tag_header(client, repo):
    payload = oci_image(client, repo)
    r = put_with_tags(client, repo, sha256(payload), payload, [])
    assert r.status_code == 201 and "oci-tag" not in r.headers
    assert "oci-tag" not in put_manifest(client, repo, "v1", payload).headers  # nor a push by tag


def test_a_tag_listed_twice_is_tagged_once(client, repo):
    payload = oci_image(client, repo)
    r = put_with_tags(client, repo, sha256(payload), payload, ["b", "a", "b"])
    assert r.status_code == 201 and r.headers.get_list("oci-tag") == ["b", "a"]
    assert tags_of(client, repo) == ["a", "b"]


def test_tags_pushed_with_a_digest_move_like_any_tag(client, repo):
    first, _ = push_image(client, repo, "latest", layers=[b"first"])
    payload = oci_image(client, repo, "second")
    assert put_with_tags(client, repo, sha256(payload), payload, ["latest", "v2"]).status_code == 201
    for tag in ("latest", "v2"):
        assert client.get(f"/v2/{repo}/manifests/{tag}").headers["docker-content-digest"] == sha256(payload)
    assert client.get(f"/v2/{repo}/manifests/{first}").status_code == 200


def test_the_most_tags_a_push_takes(client, repo):
    payload = oci_image(client, repo)
    tags = [f"t{i:03}" for i in range(100)]
    r = put_with_tags(client, repo, sha256(payload), payload, tags)
    assert r.status_code == 201 and r.headers.get_list("oci-tag") == tags
    assert tags_of(client, repo) == tags


@pytest.mark.parametrize(
    "tags",
    [[f"t{i}" for i in range(101)], ["good", "also-good", ".bad"], ["good", "a" * 129], ["good", ""]],
    ids=["too-many", "one-bad", "one-too-long", "one-empty"],
)
def test_tags_are_all_or_nothing(client, repo, tags):
    push_image(client, repo, "existing")
    payload = oci_image(client, repo, "new")
    assert_error(put_with_tags(client, repo, sha256(payload), payload, tags), 400, "TAG_INVALID")
    assert tags_of(client, repo) == ["existing"]
    assert_absent(client, repo, sha256(payload))
    assert_absent(client, repo, "good")


def test_tag_parameters_on_a_push_by_tag_are_400(client, repo):
    payload = oci_image(client, repo)
    r = client.put(f"/v2/{repo}/manifests/v1", params={"tag": "v2"}, content=payload, headers={"Content-Type": OCI_MANIFEST})
    assert_error(r, 400, "TAG_INVALID")
    assert tags_of(client, repo) == []


def test_a_sha512_manifest_is_known_by_its_sha512_digest_everywhere(client, repo):
    """Pushed by a sha512 digest with tags: the tags point at that digest, and every answer about
    the manifest (push, reads by tag and digest, referrers) says so; the sha256 of the same bytes
    names nothing."""
    subject, _ = push_image(client, repo, "subject")
    config, layer = _blobs(client, repo, "sha512")
    doc = image_manifest(
        config, [layer], subject={"mediaType": OCI_MANIFEST, "digest": subject, "size": 10}, artifactType="application/vnd.example.sig"
    )
    payload = json.dumps(doc).encode()
    digest = sha512(payload)
    r = put_with_tags(client, repo, digest, payload, ["signed", "signed-too"])
    assert r.status_code == 201, r.text
    assert r.headers["docker-content-digest"] == digest
    assert urlsplit(r.headers["location"]).path == f"/v2/{repo}/manifests/{digest}"
    assert r.headers.get_list("oci-tag") == ["signed", "signed-too"]
    for reference in ("signed", "signed-too", digest):
        for _ in range(2):  # the second read may come from a cache
            got = client.get(f"/v2/{repo}/manifests/{reference}")
            assert (got.status_code, got.content, got.headers["docker-content-digest"]) == (200, payload, digest)
            assert got.headers["etag"] == f'"{digest}"'
            head = client.head(f"/v2/{repo}/manifests/{reference}")
            assert (head.status_code, head.headers["docker-content-digest"]) == (200, digest)
    assert tags_of(client, repo) == ["signed", "signed-too", "subject"]
    referrers = client.get(f"/v2/{repo}/referrers/{subject}").json()["manifests"]
    assert [(d["digest"], d["size"]) for d in referrers] == [(digest, len(payload))]
    assert_absent(client, repo, sha256(payload))

    assert client.delete(f"/v2/{repo}/manifests/{digest}").status_code == 202
    for reference in ("signed", "signed-too", digest):
        assert_absent(client, repo, reference)
    assert tags_of(client, repo) == ["subject"]


# Subjects and artifacts


def test_manifest_with_subject_gets_oci_subject_header(client, repo):
    subject = sha256(b"a manifest that does not exist (yet)")
    config, layer = _blobs(client, repo, "subject")
    doc = image_manifest(config, [layer], subject={"mediaType": OCI_MANIFEST, "digest": subject, "size": 10})
    r = put_manifest(client, repo, "sig", json.dumps(doc).encode())
    assert r.status_code == 201
    assert r.headers["oci-subject"] == subject


def test_manifest_without_subject_has_no_oci_subject_header(client, repo):
    r = put_manifest(client, repo, "v1", oci_image(client, repo))
    assert r.status_code == 201
    assert "oci-subject" not in r.headers


def test_artifact_with_empty_config(client, repo):
    assert push_blob(client, repo, EMPTY_CONFIG) == "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    blob = b'{"sbom": true}'
    push_blob(client, repo, blob)
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom.v1",
        "config": descriptor(OCI_EMPTY, EMPTY_CONFIG),
        "layers": [descriptor("application/vnd.example.sbom.v1+json", blob)],
    }
    digest, payload = push_manifest(client, repo, "sbom", doc)
    assert_manifest(client.get(f"/v2/{repo}/manifests/{digest}"), OCI_MANIFEST, payload)


def test_artifact_with_empty_config_needs_the_empty_blob(client, repo):
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom.v1",
        "config": descriptor(OCI_EMPTY, EMPTY_CONFIG),
        "layers": [],
    }
    assert_error(put_manifest(client, repo, "sbom", json.dumps(doc).encode()), 400, "MANIFEST_BLOB_UNKNOWN")


def test_manifest_without_media_type_is_served_as_oci(client, repo):
    """Only OCI lets mediaType be absent, so such a manifest is OCI whatever its config's type."""
    config, layer = _blobs(client, repo, "no-media-type")
    payload = json.dumps(
        {
            "schemaVersion": 2,
            "config": descriptor(DOCKER_CONFIG, config),
            "layers": [descriptor(OCI_LAYER, layer)],
        }
    ).encode()
    assert put_manifest(client, repo, "bare", payload, OCI_MANIFEST).status_code == 201
    r = client.get(f"/v2/{repo}/manifests/bare")
    assert r.status_code == 200
    assert r.headers["content-type"] == OCI_MANIFEST
    assert r.content == payload


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_json_is_400_not_a_crash(client, repo, depth):
    payload = b'{"schemaVersion": 2, "x": ' + b"[" * depth + b"]" * depth + b"}"
    assert_error(put_manifest(client, repo, "v1", payload), 400, "MANIFEST_INVALID")


@pytest.mark.parametrize("name", ["a" * 255, "/".join(["b" * 60] * 4) + "/x", "longest/" + "c" * 247])
def test_longest_names_and_tags_the_grammar_allows_are_stored(client, name):
    _digest, payload = push_image(client, name, "t" * 128)
    got = client.get(f"/v2/{name}/manifests/{'t' * 128}", headers={"Accept": OCI_MANIFEST})
    assert got.status_code == 200 and got.content == payload
    assert "t" * 128 in client.get(f"/v2/{name}/tags/list").json()["tags"]
    assert_error(put_manifest(client, name, "t" * 129, payload), 400, "TAG_INVALID")
    assert_error(put_manifest(client, name, "x" * 5000, payload), 400, "TAG_INVALID")
    assert_error(
        client.get(f"/v2/{name + 'z'}/tags/list") if len(name) == 255 else client.get("/v2/" + "d" * 256 + "/tags/list"),
        400,
        "NAME_INVALID",
    )
