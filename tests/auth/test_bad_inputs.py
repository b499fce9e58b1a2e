"""Hostile or broken requests get a clean 4xx in the JSON envelope, never a 500 or a traceback
(the ``client`` fixture fails the test if the service logged one)."""

from __future__ import annotations

import base64
import socket

import httpx
import pytest

from tests.auth.support import SERVICE, basic_header, error_code, get_token, login
from tests.support.processes import Berth

SCOPE_CASES = {
    "no actions part": "repository:alice/a",
    "type only": "repository",
    "empty name": "repository::pull",
    "uppercase path": "repository:alice/App:pull",  # (a first component may be a host, which may)
    "semicolon": "repository:alice/a:pull;rm",
    "shell": "repository:alice/$(id):pull",
    "newline": "repository:alice/a\n:pull",
    "nul": "repository:alice/a\x00:pull",
    "unicode": "repository:alicé/a:pull",
    "path traversal": "repository:../../etc:pull",
    "bad type": "Repo:alice/a:pull",
    "unclosed class": "repository(plugin:alice/a:pull",
    "bad action": "repository:alice/a:PULL",
    "colons only": ":::",
    "two ports": "repository:host:1:2/a:pull",
    "huge": "repository:" + "a" * 20_000 + ":pull",
}


@pytest.mark.parametrize("scope", SCOPE_CASES.values(), ids=SCOPE_CASES.keys())
def test_odd_scopes_are_400_scope_invalid(client: httpx.Client, scope: str) -> None:
    r = get_token(client, scope, user="alice")
    assert r.status_code == 400, r.text
    assert error_code(r) == "SCOPE_INVALID"


def test_too_many_scopes(client: httpx.Client) -> None:
    r = get_token(client, *[f"repository:alice/r{i}:pull" for i in range(65)], user="alice")
    assert r.status_code == 400 and error_code(r) == "SCOPE_INVALID"
    packed = " ".join(f"repository:alice/r{i}:pull" for i in range(65))  # the cap counts spaced scopes too
    r = get_token(client, packed, user="alice")
    assert r.status_code == 400 and error_code(r) == "SCOPE_INVALID"
    assert get_token(client, *[f"repository:alice/r{i}:pull" for i in range(64)], user="alice").status_code == 200


def test_thousands_of_scope_parameters(client: httpx.Client) -> None:
    r = client.get("/token", params=[("service", SERVICE)] + [("scope", "repository:a:pull")] * 2000)
    assert r.status_code == 400 and error_code(r) == "SCOPE_INVALID"


def test_request_line_beyond_any_reasonable_size(auth: Berth) -> None:
    # Longer than httpx will send: written by hand. Whoever answers (uvicorn or the app), it is a 4xx.
    with socket.create_connection(("127.0.0.1", auth.auth_port), timeout=30) as sock:
        sock.sendall(b"GET /token?service=berth&scope=" + b"a" * 300_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        status_line = sock.makefile("rb").readline()
    assert status_line.startswith(b"HTTP/1.1 4"), status_line


@pytest.mark.parametrize("path", ["/authorize", "/token", "/revoke"])
def test_a_client_that_leaves_before_its_body_arrives_is_no_error(client: httpx.Client, auth: Berth, path: str) -> None:
    # Found by tests/fuzz: ClientDisconnect while reading the body was an unhandled error with two
    # tracebacks (the ``client`` fixture checks the log).
    with socket.create_connection(("127.0.0.1", auth.auth_port), timeout=30) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            "Content-Length: 100\r\n\r\nscope=".encode()
        )
        sock.shutdown(socket.SHUT_WR)
        sock.makefile("rb").read()
    assert client.get("/_ping").status_code == 200  # and the service goes on


AUTH_CASES = {
    "bad base64": {"Authorization": "Basic !!!notbase64"},
    "base64 without colon": basic_header(b"alice"),
    "empty user": basic_header(b":alice-password"),
    "not utf-8": basic_header(b"al\xffce:pw"),
    "empty basic": {"Authorization": "Basic"},
    "other scheme": {"Authorization": "Digest username=alice"},
    "bearer at /token": {"Authorization": "Bearer abc"},
    "huge": {"Authorization": "Basic " + base64.b64encode(b"a:" + b"b" * 20_000).decode()},
}


@pytest.mark.parametrize("headers", AUTH_CASES.values(), ids=AUTH_CASES.keys())
def test_malformed_credentials_are_401(client: httpx.Client, headers: dict[str, str]) -> None:
    r = client.get("/token", params={"service": SERVICE}, headers=headers)
    assert r.status_code == 401, r.text
    assert error_code(r) == "UNAUTHORIZED"


def test_odd_but_well_formed_credentials(client: httpx.Client) -> None:
    # A password with a colon, unicode, a NUL byte or 73+ bytes never matches and never breaks.
    for user, password in [
        ("alice", "alice-password:extra"),
        ("alicé", "pw"),
        ("alice", "a\x00b"),
        ("alice", "x" * 200),
        ("a" * 5000, "pw"),
    ]:
        r = client.get("/token", params={"service": SERVICE}, headers=basic_header(f"{user}:{password}".encode()))
        assert r.status_code == 401, (user[:10], r.text)


@pytest.mark.parametrize(
    "params",
    [
        {"offline_token": "maybe"},
        {"client_id": "tab\there"},
        {"client_id": "x" * 500},
        {"service": SERVICE * 1000},
    ],
)
def test_bad_token_options_are_400(client: httpx.Client, params: dict[str, str]) -> None:
    r = client.get("/token", params={"service": SERVICE, **params}, auth=login("alice"))
    assert r.status_code == 400, r.text
    assert error_code(r) in {"BAD_TOKEN_OPTION", "UNSUPPORTED_VALUE"}


def test_post_bodies_that_are_not_forms(client: httpx.Client) -> None:
    cases = [
        (b"x" * 70_000, "application/x-www-form-urlencoded"),
        (b"grant_type=password&" + b"&".join(b"f%d=1" % i for i in range(500)), "application/x-www-form-urlencoded"),
        (b"%zz=%", "application/x-www-form-urlencoded"),
        (b'{"grant_type": "password"}', "application/json"),
        (b"", "text/plain"),
    ]
    for body, content_type in cases:
        for path in ("/token", "/revoke"):
            r = client.post(path, content=body, headers={"Content-Type": content_type})
            assert 400 <= r.status_code < 500, (path, body[:30], r.text)
            assert error_code(r)
