"""Content discovery: tags lists, the catalog, and the referrers API."""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.images import OCI_INDEX, OCI_MANIFEST, sha256
from tests.support.registry import (
    EMPTY_CONFIG,
    OCI_EMPTY,
    assert_error,
    image_manifest,
    push_blob,
    push_image,
    push_manifest,
)

TAGS = ["1.0", "1.10", "1.2", "latest", "v1", "v2", "zeta", "0"]


def next_link(r: httpx.Response) -> str | None:
    """The target of a ``Link: <...>; rel="next"`` header, if any."""
    link = r.headers.get("link")
    if link is None:
        return None
    m = re.fullmatch(r'<([^>]+)>;\s*rel="next"', link.strip())
    assert m, f"malformed Link header {link!r}"
    return m.group(1)


@pytest.fixture()
def tagged(client, repo) -> list[str]:
    """``repo`` with every tag of TAGS on one manifest; returns them in lexical order."""
    _digest, payload = push_image(client, repo, TAGS[0])
    for tag in TAGS[1:]:
        push_manifest(client, repo, tag, payload)
    return sorted(TAGS)


# Tags


def test_tags_are_listed_in_lexical_order(client, repo, tagged):
    r = client.get(f"/v2/{repo}/tags/list")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"name": repo, "tags": tagged}
    assert "link" not in r.headers


def test_tags_n_limits_and_links_to_the_rest(client, repo, tagged):
    r = client.get(f"/v2/{repo}/tags/list", params={"n": 3})
    assert r.status_code == 200
    assert r.json()["tags"] == tagged[:3]
    link = next_link(r)
    assert link is not None and urlsplit(link).path == f"/v2/{repo}/tags/list"
    assert parse_qs(urlsplit(link).query)["last"] == [tagged[2]]

    seen = list(r.json()["tags"])
    while link:
        r = client.get(link)
        assert r.status_code == 200
        assert 0 < len(r.json()["tags"]) <= 3
        seen += r.json()["tags"]
        link = next_link(r)
    assert seen == tagged


def test_tags_n_equal_to_the_count_has_no_link(client, repo, tagged):
    r = client.get(f"/v2/{repo}/tags/list", params={"n": len(tagged)})
    assert r.json()["tags"] == tagged
    assert "link" not in r.headers


def test_tags_n_larger_than_the_count(client, repo, tagged):
    r = client.get(f"/v2/{repo}/tags/list", params={"n": 1000})
    assert r.json()["tags"] == tagged
    assert "link" not in r.headers


def test_tags_last_starts_after_it(client, repo, tagged):
    r = client.get(f"/v2/{repo}/tags/list", params={"n": 2, "last": tagged[3]})
    assert r.json()["tags"] == tagged[4:6]
    r = client.get(f"/v2/{repo}/tags/list", params={"last": tagged[3]})  # n is optional
    assert r.json()["tags"] == tagged[4:]
    r = client.get(f"/v2/{repo}/tags/list", params={"last": "1.1"})  # need not be a tag that exists
    assert r.json()["tags"] == [t for t in tagged if t > "1.1"]


def test_tags_n_zero_is_empty_without_link(client, repo, tagged):
    r = client.get(f"/v2/{repo}/tags/list", params={"n": 0})
    assert r.status_code == 200
    assert r.json() == {"name": repo, "tags": []}
    assert "link" not in r.headers


@pytest.mark.parametrize("n", ["-1", "abc", "1.5", "1e3", "99999999999"])
def test_tags_bad_n_is_400(client, repo, tagged, n):
    assert_error(client.get(f"/v2/{repo}/tags/list", params={"n": n}), 400, "PAGINATION_NUMBER_INVALID")


def test_tags_of_unknown_repository_is_404(client):
    name = "test_listing/never-pushed"
    assert_error(client.get(f"/v2/{name}/tags/list"), 404, "NAME_UNKNOWN")
    assert_error(client.get(f"/v2/{name}/tags/list", params={"n": 0}), 404, "NAME_UNKNOWN")


def test_tags_of_repository_with_only_blobs_is_empty(client, repo):
    push_blob(client, repo, b"a blob, no manifest")
    r = client.get(f"/v2/{repo}/tags/list")
    assert (r.status_code, r.json()) == (200, {"name": repo, "tags": []})


# Catalog


def test_catalog_lists_repositories_with_pagination(client, repo):
    names = [f"{repo}/{leaf}" for leaf in ("a", "b", "c")]
    for name in names:
        push_image(client, name, "v1")
    r = client.get("/v2/_catalog", params={"n": 2, "last": repo})
    assert r.status_code == 200
    assert r.json() == {"repositories": names[:2]}
    link = next_link(r)
    assert link is not None and urlsplit(link).path == "/v2/_catalog"
    assert parse_qs(urlsplit(link).query) == {"n": ["2"], "last": [names[1]]}
    r = client.get(link)
    assert r.status_code == 200
    assert r.json()["repositories"][0] == names[2]


def test_catalog_lists_every_repository_once(client, repo):
    push_image(client, repo, "v1")
    push_image(client, repo, "v2")
    push_blob(client, f"{repo}/blobs-only", b"x")
    seen, link = [], "/v2/_catalog?n=5"
    while link:
        r = client.get(link)
        assert r.status_code == 200
        seen += r.json()["repositories"]
        link = next_link(r)
    assert seen == sorted(set(seen))
    assert repo in seen and f"{repo}/blobs-only" in seen


ODD_LEAVES = ["a", "a-b", "a.b", "a/b", "a-b/c", "a.b/c", "a/b/c", "a/b-c", "a0", "a_b", "a__b", "ab", "b/a/a"]
ODD_TAGS = ["1.0", "1.0-rc", "1.0.1", "1.0_1", "1-0", "1", "10", "A", "_x", "latest", "v1", "v1-a", "v1.a"]


def test_catalog_pages_with_odd_names_are_in_lexical_order(client, repo):
    names = [f"{repo}/{leaf}" for leaf in ODD_LEAVES]
    for name in names:
        push_blob(client, name, b"x")
    ours = sorted(names)
    for n in (1, 3, 100):
        seen, link = [], f"/v2/_catalog?n={n}&last={repo}"
        while link and (not seen or seen[-1] <= ours[-1]):
            r = client.get(link)
            assert r.status_code == 200
            seen += r.json()["repositories"]
            link = next_link(r)
        assert seen == sorted(set(seen))
        assert [name for name in seen if name.startswith(f"{repo}/")] == ours
    # A page after a name that is none (between "a" and "a-b"), and after a folder's name plus "/".
    for last in (f"{repo}/a-", f"{repo}/a/", f"{repo}/a.b/"):
        r = client.get("/v2/_catalog", params={"n": 3, "last": last})
        assert r.json()["repositories"] == [name for name in ours if name > last][:3]


def test_tags_pages_with_odd_tags_are_in_lexical_order(client, repo):
    _digest, payload = push_image(client, repo, ODD_TAGS[0])
    for tag in ODD_TAGS[1:]:
        push_manifest(client, repo, tag, payload)
    for n in (1, 4):
        seen, link = [], f"/v2/{repo}/tags/list?n={n}"
        while link:
            seen += client.get(link).json()["tags"]
            link = next_link(client.get(link))
        assert seen == sorted(ODD_TAGS)
    r = client.get(f"/v2/{repo}/tags/list", params={"n": 2, "last": "1.0-"})
    assert r.json()["tags"] == ["1.0-rc", "1.0.1"]


def test_catalog_n_zero_is_empty_without_link(client, repo):
    push_image(client, repo, "v1")
    r = client.get("/v2/_catalog", params={"n": 0})
    assert (r.status_code, r.json()) == (200, {"repositories": []})
    assert "link" not in r.headers


@pytest.mark.parametrize("n", ["-5", "ten"])
def test_catalog_bad_n_is_400(client, n):
    assert_error(client.get("/v2/_catalog", params={"n": n}), 400, "PAGINATION_NUMBER_INVALID")


# Referrers


def _referrer(
    client: httpx.Client,
    repo: str,
    subject: dict,
    *,
    artifact_type: str | None = None,
    config_type: str = OCI_EMPTY,
    annotations: dict | None = None,
    seed: str = "",
) -> tuple[str, bytes]:
    """Pushes a manifest whose subject is ``subject``; returns its digest and bytes."""
    config = EMPTY_CONFIG if config_type == OCI_EMPTY else json.dumps({"seed": seed}).encode()
    layer = f"referrer content {seed}".encode()
    push_blob(client, repo, config)
    push_blob(client, repo, layer)
    doc = image_manifest(config, [layer], subject=subject)
    doc["config"]["mediaType"] = config_type
    if artifact_type is not None:
        doc["artifactType"] = artifact_type
    if annotations:
        doc["annotations"] = annotations
    return push_manifest(client, repo, sha256(json.dumps(doc).encode()), doc)


@pytest.fixture()
def subject(client, repo) -> dict:
    digest, payload = push_image(client, repo, "subject")
    return {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(payload)}


def referrers(client: httpx.Client, repo: str, digest: str, **params: str) -> httpx.Response:
    r = client.get(f"/v2/{repo}/referrers/{digest}", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == OCI_INDEX
    body = r.json()
    assert body["schemaVersion"] == 2 and body["mediaType"] == OCI_INDEX
    return r


def test_referrers_of_unknown_subject_is_an_empty_index(client, repo):
    push_image(client, repo, "v1")
    r = referrers(client, repo, sha256(b"nothing refers to this"))
    assert r.json()["manifests"] == []
    r = referrers(client, "test_listing/never-pushed", sha256(b"nor this"))
    assert r.json()["manifests"] == []


def test_referrers_lists_descriptors_with_artifact_type_and_annotations(client, repo, subject):
    sbom, sbom_bytes = _referrer(
        client, repo, subject, artifact_type="application/vnd.example.sbom.v1", annotations={"org.example.kind": "sbom"}, seed="sbom"
    )
    sig, sig_bytes = _referrer(client, repo, subject, config_type="application/vnd.example.signature.config.v1+json", seed="sig")
    listed = {d["digest"]: d for d in referrers(client, repo, subject["digest"]).json()["manifests"]}
    assert set(listed) == {sbom, sig}
    assert listed[sbom] == {
        "mediaType": OCI_MANIFEST,
        "digest": sbom,
        "size": len(sbom_bytes),
        "artifactType": "application/vnd.example.sbom.v1",
        "annotations": {"org.example.kind": "sbom"},
    }
    # Without artifactType, an image manifest is named by its config's media type.
    assert listed[sig] == {
        "mediaType": OCI_MANIFEST,
        "digest": sig,
        "size": len(sig_bytes),
        "artifactType": "application/vnd.example.signature.config.v1+json",
    }


def test_index_referrer_without_artifact_type_omits_it(client, repo, subject):
    child = push_image(client, repo, "child")
    child_descriptor = {"mediaType": OCI_MANIFEST, "digest": child[0], "size": len(child[1])}
    doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [child_descriptor], "subject": subject, "annotations": {"a": "b"}}
    digest, payload = push_manifest(client, repo, "index-referrer", doc)
    listed = referrers(client, repo, subject["digest"]).json()["manifests"]
    assert listed == [{"mediaType": OCI_INDEX, "digest": digest, "size": len(payload), "annotations": {"a": "b"}}]


def test_referrers_filter_by_artifact_type(client, repo, subject):
    sbom, _ = _referrer(client, repo, subject, artifact_type="application/vnd.example.sbom.v1", seed="sbom")
    _referrer(client, repo, subject, artifact_type="application/vnd.example.signature.v1", seed="sig")
    r = referrers(client, repo, subject["digest"], artifactType="application/vnd.example.sbom.v1")
    assert r.headers["oci-filters-applied"] == "artifactType"
    assert [d["digest"] for d in r.json()["manifests"]] == [sbom]

    plus, _ = _referrer(client, repo, subject, artifact_type="application/vnd.example.attestation+json", seed="plus")
    r = referrers(client, repo, subject["digest"], artifactType="application/vnd.example.attestation+json")
    assert [d["digest"] for d in r.json()["manifests"]] == [plus]

    r = referrers(client, repo, subject["digest"], artifactType="application/vnd.example.none")
    assert r.headers["oci-filters-applied"] == "artifactType"
    assert r.json()["manifests"] == []

    assert "oci-filters-applied" not in referrers(client, repo, subject["digest"]).headers


def test_referrer_may_be_pushed_before_its_subject(client, repo):
    payload = json.dumps(image_manifest(b'{"later": true}', [])).encode()  # never pushed
    missing_subject = {"mediaType": OCI_MANIFEST, "digest": sha256(payload), "size": len(payload)}
    digest, _ = _referrer(client, repo, missing_subject, artifact_type="application/vnd.example.early", seed="early")
    assert [d["digest"] for d in referrers(client, repo, missing_subject["digest"]).json()["manifests"]] == [digest]


def test_referrers_are_per_repository(client, repo, subject):
    _referrer(client, repo, subject, artifact_type="application/vnd.example.sbom.v1")
    assert referrers(client, f"{repo}-other", subject["digest"]).json()["manifests"] == []


@pytest.mark.parametrize("digest", ["sha256:abc", "notadigest", "md5:" + "0" * 32])
def test_referrers_with_invalid_digest_is_400(client, repo, subject, digest):
    assert_error(client.get(f"/v2/{repo}/referrers/{digest}"), 400, "DIGEST_INVALID")


def test_deleted_referrer_leaves_the_list(client, repo, subject):
    gone, _ = _referrer(client, repo, subject, artifact_type="application/vnd.example.a", seed="a")
    kept, _ = _referrer(client, repo, subject, artifact_type="application/vnd.example.b", seed="b")
    assert client.delete(f"/v2/{repo}/manifests/{gone}").status_code == 202
    assert [d["digest"] for d in referrers(client, repo, subject["digest"]).json()["manifests"]] == [kept]


def test_deleting_the_subject_keeps_its_referrers_listed(client, repo, subject):
    referrer, _ = _referrer(client, repo, subject, artifact_type="application/vnd.example.a")
    assert client.delete(f"/v2/{repo}/manifests/{subject['digest']}").status_code == 202
    assert [d["digest"] for d in referrers(client, repo, subject["digest"]).json()["manifests"]] == [referrer]


def test_deleting_a_tag_on_a_referrer_keeps_it_listed(client, repo, subject):
    config = EMPTY_CONFIG
    push_blob(client, repo, config)
    doc = image_manifest(config, [], subject=subject, artifactType="application/vnd.example.tagged")
    doc["config"]["mediaType"] = OCI_EMPTY
    digest, _ = push_manifest(client, repo, "tagged-referrer", doc)
    assert client.delete(f"/v2/{repo}/manifests/tagged-referrer").status_code == 202
    assert [d["digest"] for d in referrers(client, repo, subject["digest"]).json()["manifests"]] == [digest]


def test_listings_answer_head_like_get(client, repo, subject):
    for path in (f"/v2/{repo}/tags/list", "/v2/_catalog", f"/v2/{repo}/referrers/{subject['digest']}"):
        got, head = client.get(path), client.head(path)
        assert (head.status_code, head.content) == (200, b"")
        assert head.headers["content-type"] == got.headers["content-type"]
        assert head.headers["content-length"] == str(len(got.content))
