"""The one parser of ``Authorization: Basic`` (token service and gateway alike)."""

from __future__ import annotations

import base64

import pytest

from services.common import basic_auth
from services.common.basic_auth import BasicCredentials, MalformedCredentials


def basic(raw: bytes, scheme: str = "Basic") -> str:
    return f"{scheme} {base64.b64encode(raw).decode()}"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (basic(b"alice:pw"), ("alice", "pw")),
        (basic(b"bob:builder:with:colons"), ("bob", "builder:with:colons")),  # the first ':' splits
        (basic(b"alice:"), ("alice", "")),  # an empty password is read (and then fails to match)
        (basic("alicé:pässword".encode()), ("alicé", "pässword")),
        (basic(b"alice:pw", "basic"), ("alice", "pw")),  # the scheme is case-insensitive
        ("  " + basic(b"alice:pw").replace(" ", "   ") + "  ", ("alice", "pw")),
    ],
)
def test_credentials(header: str, expected: tuple[str, str]) -> None:
    assert basic_auth.parse(header) == BasicCredentials(*expected)
    assert basic_auth.parse_or_none(header) == BasicCredentials(*expected)


@pytest.mark.parametrize("header", [None, "", "   "])
def test_no_header_is_anonymous(header: str | None) -> None:
    assert basic_auth.parse(header) is None


@pytest.mark.parametrize(
    ("header", "why"),
    [
        ("Bearer abc", "expected Basic"),
        ("Digest username=alice", "expected Basic"),
        (base64.b64encode(b"alice:pw").decode(), "expected Basic"),  # no scheme
        ("Basic", "malformed"),
        ("Basic    ", "malformed"),
        ("Basic " + "a" * (basic_auth.MAX_LENGTH + 4), "malformed"),  # refused before decoding
        ("Basic !!!notbase64", "not base64"),
        ("Basic YWxpY2U6cHc", "not base64"),  # padding missing
        (basic(b"al\xffce:pw"), "not base64 of UTF-8"),
        (basic(b"alice"), "user:password"),
        (basic(b":pw"), "user:password"),
        (basic(b""), "malformed"),
    ],
)
def test_malformed_credentials(header: str, why: str) -> None:
    with pytest.raises(MalformedCredentials, match=why) as caught:
        basic_auth.parse(header)
    assert "alice" not in str(caught.value)  # the message never repeats the header
    assert basic_auth.parse_or_none(header) is None


def test_the_password_stays_out_of_repr() -> None:
    credentials = basic_auth.parse(basic(b"alice:hunter2"))
    assert credentials is not None and "hunter2" not in repr(credentials) and "alice" in repr(credentials)
