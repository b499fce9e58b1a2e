"""The spec's grammar for names, tags and digests."""

from __future__ import annotations

import pytest

from services.common import digests, names
from services.common.errors import DIGEST_INVALID, NAME_INVALID, TAG_INVALID, RegistryError


@pytest.mark.parametrize("name", ["a", "library/ubuntu", "a.b_c__d-e--f/g", "x" * 255, "0/1/2/3"])
def test_valid_names(name: str) -> None:
    assert names.check_name(name) == name


@pytest.mark.parametrize("name", ["", "Upper", "a//b", "a/../b", "..", "/a", "a/", "a_", "-a", "a" * 256, "a\n", "a b"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(RegistryError) as exc:
        names.check_name(name)
    assert exc.value.code is NAME_INVALID


@pytest.mark.parametrize("tag", ["latest", "v1.0", "_x", "A" * 128])
def test_valid_tags(tag: str) -> None:
    assert names.check_tag(tag) == tag


@pytest.mark.parametrize("tag", ["", "-x", ".x", "A" * 129, "a/b", "a:b", "x\n"])
def test_invalid_tags(tag: str) -> None:
    with pytest.raises(RegistryError) as exc:
        names.check_tag(tag)
    assert exc.value.code is TAG_INVALID


def test_digests() -> None:
    d = digests.parse("sha256:" + "a" * 64)
    assert (d.algorithm, d.hex) == ("sha256", "a" * 64)
    assert digests.parse("sha512:" + "0" * 128).algorithm == "sha512"
    assert digests.of(b"") == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "sha256",
        "sha256:",
        "sha256:" + "a" * 63,
        "sha256:" + "A" * 64,
        "md5:" + "a" * 32,
        "sha256:" + "g" * 64,
        "sha512:" + "a" * 64,
        "sha256:" + "a" * 64 + "\n",
    ],
)
def test_invalid_digests(value: str) -> None:
    with pytest.raises(RegistryError) as exc:
        digests.parse(value)
    assert exc.value.code is DIGEST_INVALID
