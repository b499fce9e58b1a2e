"""POST /authorize: what the rules grant a Bearer token's account (or anonymous) for given scopes;
only tokens this service signed, unexpired, with its issuer and one of its audiences, count."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.auth.support import ISSUER, SERVICE, error_code, get_token, key_path, token_of
from tests.support.processes import Berth

SCOPES = ["repository:alice/app:pull,push", "repository:public/lib:pull,push", "repository:bob/app:pull", "registry:catalog:*"]


def authorize(client: httpx.Client, scopes: list[str], token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.post("/authorize", json={"scopes": scopes}, headers=headers)


def granted(r: httpx.Response) -> dict[tuple[str, str], set[str]]:
    assert r.status_code == 200, r.text
    return {(a["type"], a["name"]): set(a["actions"]) for a in r.json()["access"]}


def claims(**override: Any) -> dict[str, Any]:
    now = int(time.time())
    body = {"iss": ISSUER, "sub": "admin", "aud": SERVICE, "exp": now + 60, "nbf": now, "iat": now, "jti": "x", "access": []}
    body.update(override)
    return body


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def service_key(auth: Berth) -> tuple[Any, str]:
    """The service's own private key and kid, read from disk, to forge tokens it must still refuse."""
    with auth.auth_client() as client:
        kid = jwt.get_unverified_header(token_of(get_token(client)))["kid"]
    return serialization.load_pem_private_key(key_path(auth).read_bytes(), password=None), kid


def test_anonymous_without_a_header(client: httpx.Client) -> None:
    r = authorize(client, SCOPES)
    assert r.json()["account"] == ""
    assert granted(r) == {
        ("repository", "alice/app"): set(),
        ("repository", "public/lib"): {"pull"},
        ("repository", "bob/app"): set(),
        ("registry", "catalog"): set(),
    }
    anonymous_token = token_of(get_token(client))  # sub "": the same as no header
    assert authorize(client, SCOPES, anonymous_token).json() == r.json()


def test_account_of_the_token_and_its_rules(client: httpx.Client) -> None:
    token = token_of(get_token(client, user="alice"))  # a token with no access at all
    r = authorize(client, SCOPES, token)
    assert r.json()["account"] == "alice"
    assert granted(r) == {
        ("repository", "alice/app"): {"pull", "push"},
        ("repository", "public/lib"): {"pull"},
        ("repository", "bob/app"): set(),
        ("registry", "catalog"): set(),
    }
    admin = token_of(get_token(client, user="admin"))
    assert all(actions for actions in granted(authorize(client, SCOPES, admin)).values())


def test_refused_tokens_are_401_invalid_token(client: httpx.Client, service_key: tuple[Any, str]) -> None:
    key, kid = service_key
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    foreign = ec.generate_private_key(ec.SECP256R1())
    header = {"alg": "none", "typ": "JWT", "kid": kid}
    unsigned = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims()).encode())}."
    hs_input = f"{b64(json.dumps({**header, 'alg': 'HS256'}).encode())}.{b64(json.dumps(claims()).encode())}"
    hs256 = f"{hs_input}.{b64(hmac.new(public_pem, hs_input.encode(), hashlib.sha256).digest())}"
    refused = {
        "alg none": unsigned,
        "HS256 keyed with the public key": hs256,
        "expired": jwt.encode(claims(exp=int(time.time()) - 600, iat=int(time.time()) - 900), key, "ES256", headers={"kid": kid}),
        "not yet valid": jwt.encode(claims(nbf=int(time.time()) + 600), key, "ES256", headers={"kid": kid}),
        "foreign key, our kid": jwt.encode(claims(), foreign, "ES256", headers={"kid": kid}),
        "no kid": jwt.encode(claims(), key, "ES256"),
        "other issuer": jwt.encode(claims(iss="someone-else"), key, "ES256", headers={"kid": kid}),
        "other audience": jwt.encode(claims(aud="not-ours"), key, "ES256", headers={"kid": kid}),
        "no exp": jwt.encode({k: v for k, v in claims().items() if k != "exp"}, key, "ES256", headers={"kid": kid}),
        "garbage": "abc.def.ghi",
        "not a jwt": "hello",
        "huge": "a" * 20000 + ".b.c",
    }
    for name, token in refused.items():
        r = authorize(client, ["repository:public/lib:pull"], token)
        assert r.status_code == 401, f"{name}: {r.status_code} {r.text}"
        assert error_code(r) == "UNAUTHORIZED", name
        assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"', name
    # The same forging code with valid claims is accepted: the refusals above are about the claims.
    good = jwt.encode(claims(), key, "ES256", headers={"kid": kid})
    assert authorize(client, ["repository:public/lib:pull"], good).json()["account"] == "admin"


@pytest.mark.parametrize("header", ["Bearer", "Bearer a b", "Basic YWxpY2U6eA==", "Token abc", b"Bearer \xe9t\xe9.a.b"])
def test_malformed_authorization_headers(client: httpx.Client, header: str | bytes) -> None:
    r = client.post("/authorize", json={"scopes": []}, headers={"Authorization": header})
    assert r.status_code == 401, r.text
    assert error_code(r) == "UNAUTHORIZED"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"scopes": "repository:a:pull"}',
        b'{"scopes": [1, 2]}',
        b'{"other": []}',
        b"[" * 30000 + b"]" * 30000,
        b'{"scopes": ["repository:a:pull;rm -rf"]}',
    ],
)
def test_malformed_bodies_are_400(client: httpx.Client, body: bytes) -> None:
    r = client.post("/authorize", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert error_code(r) in {"UNSUPPORTED_VALUE", "SCOPE_INVALID", "BAD_TOKEN_OPTION"}


def test_scope_count_is_capped(client: httpx.Client) -> None:
    r = authorize(client, [f"repository:public/r{i}:pull" for i in range(65)])
    assert r.status_code == 400 and error_code(r) == "SCOPE_INVALID"
    assert len(granted(authorize(client, [f"repository:public/r{i}:pull" for i in range(64)]))) == 64
