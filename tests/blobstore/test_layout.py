"""layout: every storage path Berth writes, built from checked names, tags, digests and upload ids
(registry:2's layout), and the refusal of anything that could leave its folder."""

from __future__ import annotations

import hashlib
import posixpath
import re
import uuid
from collections.abc import Callable

import pytest

from services.blobstore import layout
from services.common.errors import BLOB_UPLOAD_UNKNOWN, DIGEST_INVALID, NAME_INVALID, TAG_INVALID, RegistryError

SHA256 = "sha256:" + hashlib.sha256(b"x").hexdigest()
SHA512 = "sha512:" + hashlib.sha512(b"x").hexdigest()
HEX256, HEX512 = SHA256.split(":")[1], SHA512.split(":")[1]
UPLOAD = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
REPOS = "/docker/registry/v2/repositories"


def test_blob_data_is_registry2s_path() -> None:
    assert layout.blob_data(SHA256) == f"/docker/registry/v2/blobs/sha256/{HEX256[:2]}/{HEX256}/data"
    assert layout.blob_data(SHA512) == f"/docker/registry/v2/blobs/sha512/{HEX512[:2]}/{HEX512}/data"


def test_repository_paths() -> None:
    name = "team/sub.app__x/a-b"
    base = f"{REPOS}/{name}"
    assert layout.repository(name) == base
    assert layout.layer_link_dir(name, SHA256) == f"{base}/_layers/sha256/{HEX256}"
    assert layout.layer_link(name, SHA256) == f"{base}/_layers/sha256/{HEX256}/link"
    assert layout.revision_dir(name, SHA512) == f"{base}/_manifests/revisions/sha512/{HEX512}"
    assert layout.revision_link(name, SHA256) == f"{base}/_manifests/revisions/sha256/{HEX256}/link"
    assert layout.tags_dir(name) == f"{base}/_manifests/tags"
    assert layout.tag_dir(name, "v1.0_rc-1") == f"{base}/_manifests/tags/v1.0_rc-1"
    assert layout.tag_current_link(name, "latest") == f"{base}/_manifests/tags/latest/current/link"
    assert layout.tag_index_link(name, "latest", SHA256) == f"{base}/_manifests/tags/latest/index/sha256/{HEX256}/link"
    assert layout.upload_dir(name, UPLOAD) == f"{base}/_uploads/{UPLOAD}"
    assert layout.upload_data(name, UPLOAD) == f"{base}/_uploads/{UPLOAD}/data"
    assert layout.upload_started_at(name, UPLOAD) == f"{base}/_uploads/{UPLOAD}/startedat"
    assert layout.referrers_dir(name, SHA256) == f"{base}/_referrers/sha256/{HEX256}"
    assert layout.referrer_entry(name, SHA256, SHA512) == f"{base}/_referrers/sha256/{HEX256}/sha512-{HEX512}"
    assert layout.mirror_dir(name, "blobs") == f"{base}/_mirror/blobs"
    assert layout.mirror_record(name, "manifests", SHA256) == f"{base}/_mirror/manifests/sha256-{HEX256}"
    assert layout.mirror_record(name, "tags", "latest") == f"{base}/_mirror/tags/latest"
    assert layout.gc_live(SHA256) == f"/docker/registry/v2/_gc/live/sha256-{HEX256}"


def test_a_fresh_uuid4_is_an_upload_id() -> None:
    upload_id = str(uuid.uuid4())
    assert layout.upload_dir("a", upload_id).endswith(f"/_uploads/{upload_id}")


BAD_NAMES = [
    "",
    "..",
    "../etc",
    "a/../b",
    "a/./b",
    "/a",
    "a/",
    "a//b",
    "A",
    "a/B",
    "a b",
    "a\\b",
    "a/.hidden",
    "_a",
    "a/_layers",
    "a-",
    "-a",
    "a..b",
    "a___b",
    "a\x00b",
    "a\nb",
    "é",
    "a" * 256,
    "a/" * 127 + "ab",
]
BAD_DIGESTS = [
    "",
    "sha256",
    "sha256:",
    f"sha256:{HEX256[:-1]}",
    f"sha256:{HEX256}0",
    f"sha256:{HEX256.upper()}",
    f"sha512:{HEX256}",
    f"sha256:{HEX512}",
    f"md5:{hashlib.md5(b'x').hexdigest()}",
    f"SHA256:{HEX256}",
    f"sha256:../{HEX256[3:]}",
    f"sha256:{HEX256[:30]}/{HEX256[31:]}",
    f"sha256:{HEX256}\n",
    f" sha256:{HEX256}",
    "sha256:" + "g" * 64,
]
BAD_TAGS = ["", ".", "..", ".hidden", "-x", "a/b", "a\\b", "a:b", "a b", "a\x00", "x" * 129, "tag\n"]
BAD_UPLOADS = [
    "",
    "..",
    "../x",
    UPLOAD.upper(),
    UPLOAD + "0",
    UPLOAD[:-1],
    UPLOAD.replace("-", ""),
    f"{UPLOAD}/../x",
    f"{UPLOAD}\n",
    "0f1e2d3c/4b5a/4978/8695/a4b3c2d1e0f9",
]

NAME_PATHS: list[Callable[[str], str]] = [
    layout.repository,
    layout.tags_dir,
    lambda n: layout.layer_link(n, SHA256),
    lambda n: layout.layer_link_dir(n, SHA256),
    lambda n: layout.revision_link(n, SHA256),
    lambda n: layout.revision_dir(n, SHA256),
    lambda n: layout.tag_dir(n, "latest"),
    lambda n: layout.tag_current_link(n, "latest"),
    lambda n: layout.tag_index_link(n, "latest", SHA256),
    lambda n: layout.upload_dir(n, UPLOAD),
    lambda n: layout.upload_data(n, UPLOAD),
    lambda n: layout.upload_started_at(n, UPLOAD),
    lambda n: layout.referrers_dir(n, SHA256),
    lambda n: layout.referrer_entry(n, SHA256, SHA256),
    lambda n: layout.mirror_dir(n, "tags"),
    lambda n: layout.mirror_record(n, "blobs", SHA256),
]
DIGEST_PATHS: list[Callable[[str], str]] = [
    layout.blob_data,
    layout.gc_live,
    lambda d: layout.layer_link("a", d),
    lambda d: layout.layer_link_dir("a", d),
    lambda d: layout.revision_link("a", d),
    lambda d: layout.revision_dir("a", d),
    lambda d: layout.tag_index_link("a", "latest", d),
    lambda d: layout.referrers_dir("a", d),
    lambda d: layout.referrer_entry("a", d, SHA256),
    lambda d: layout.referrer_entry("a", SHA256, d),
    lambda d: layout.mirror_record("a", "manifests", d),
    lambda d: layout.mirror_record("a", "blobs", d),
]
TAG_PATHS: list[Callable[[str], str]] = [
    lambda t: layout.tag_dir("a", t),
    lambda t: layout.tag_current_link("a", t),
    lambda t: layout.tag_index_link("a", t, SHA256),
    lambda t: layout.mirror_record("a", "tags", t),
]
UPLOAD_PATHS: list[Callable[[str], str]] = [
    lambda u: layout.upload_dir("a", u),
    lambda u: layout.upload_data("a", u),
    lambda u: layout.upload_started_at("a", u),
]


def _refused(build: Callable[[str], str], value: str, code: object) -> None:
    with pytest.raises(RegistryError) as caught:
        build(value)
    assert caught.value.code is code, (value, caught.value.code)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_refused_by_every_path(name: str) -> None:
    for build in NAME_PATHS:
        _refused(build, name, NAME_INVALID)


@pytest.mark.parametrize("digest", BAD_DIGESTS)
def test_bad_digests_are_refused_by_every_path(digest: str) -> None:
    for build in DIGEST_PATHS:
        _refused(build, digest, DIGEST_INVALID)


@pytest.mark.parametrize("tag", BAD_TAGS)
def test_bad_tags_are_refused_by_every_path(tag: str) -> None:
    for build in TAG_PATHS:
        _refused(build, tag, TAG_INVALID)


@pytest.mark.parametrize("upload_id", BAD_UPLOADS)
def test_bad_upload_ids_are_an_unknown_upload(upload_id: str) -> None:
    for build in UPLOAD_PATHS:
        _refused(build, upload_id, BLOB_UPLOAD_UNKNOWN)


def test_a_refused_value_is_named_at_most_300_characters_long() -> None:
    with pytest.raises(RegistryError) as caught:
        layout.repository("A" * 5000)
    assert len(caught.value.detail["name"]) <= 300
    with pytest.raises(RegistryError) as caught:
        layout.upload_dir("a", "x" * 5000)
    assert len(caught.value.detail["upload"]) <= 100


def test_unknown_mirror_kinds_are_a_programming_error() -> None:
    with pytest.raises(AssertionError):
        layout.mirror_dir("a", "../blobs")
    with pytest.raises(AssertionError):
        layout.mirror_record("a", "uploads", SHA256)


GOOD_NAMES = ["a", "0", "a/b/c", "a.b", "a_b", "a__b", "a-b", "a---b", "a" * 255, "library/ubuntu", "a1/b2.c3_d4__e5-f6"]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_names_stay_inside_their_repository_folder(name: str) -> None:
    for build in NAME_PATHS:
        path = build(name)
        assert posixpath.normpath(path) == path, path  # no "..", ".", "//" or trailing "/"
        assert path.startswith(f"{REPOS}/{name}/") or path == f"{REPOS}/{name}"
        assert re.fullmatch(r"[A-Za-z0-9/._-]+", path), path
