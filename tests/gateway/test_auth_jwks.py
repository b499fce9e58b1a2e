"""Token keys from a JWKS URL (rotation, bounded refetching, an unreachable JWKS), bad key
configuration, and, in process, the verified-token cache and the identity left on the request."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.requests import Request

from services.common.config import AuthSettings, TokenAuthSettings
from services.gateway import access
from services.gateway.access.keys import load_bundle
from services.gateway.access.token import TokenAccessController, TokenVerifier
from tests.gateway.test_auth_token import token_env
from tests.support.auth import ISSUER, REALM, SERVICE, JWKSServer, SigningKey, bearer, libtrust_kid, repo_access
from tests.support.processes import Berth, free_port
from tests.support.registry import assert_error

OLD, NEW = SigningKey("ES256", kid="key-2024"), SigningKey("RS256", kid="key-2025")
NAME = "rotation/app"
GRANT = [repo_access(NAME, "pull")]


@pytest.fixture()
def jwks() -> Iterator[JWKSServer]:
    server = JWKSServer().start()
    yield server
    server.stop()


def tags(berth: Berth, token: str) -> httpx.Response:
    with berth.client() as c:
        return c.get(f"/v2/{NAME}/tags/list", headers=bearer(token))


def test_rotated_key_is_accepted_after_one_refetch(fresh_berth: Berth, jwks: JWKSServer) -> None:
    jwks.publish(OLD)
    fresh_berth.env = token_env(REGISTRY_AUTH_TOKEN_JWKS=jwks.url, REGISTRY_AUTH_TOKEN_JWKS_REFRESH_INTERVAL="1")
    fresh_berth.start()

    token = OLD.mint(GRANT)
    assert tags(fresh_berth, token).status_code == 404  # authorized; no such repository
    assert jwks.hits == 1
    for _ in range(5):  # the same token again, and another one by the same key: no fetch
        assert tags(fresh_berth, token).status_code == 404
    assert tags(fresh_berth, OLD.mint(GRANT)).status_code == 404
    assert jwks.hits == 1

    jwks.publish(OLD, NEW)  # the token service rotates: a new kid appears
    time.sleep(1.1)
    assert tags(fresh_berth, NEW.mint(GRANT)).status_code == 404
    assert jwks.hits == 2
    assert tags(fresh_berth, OLD.mint(GRANT)).status_code == 404  # the old key still counts

    # A burst of made-up kids costs at most one more fetch, and each is refused.
    for i in range(10):
        r = tags(fresh_berth, NEW.mint(GRANT, kid=f"forged-{i}"))
        assert_error(r, 401, "UNAUTHORIZED")
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
    assert jwks.hits <= 3


def test_key_removed_from_the_jwks_stops_verifying_after_the_ttl(fresh_berth: Berth, jwks: JWKSServer) -> None:
    jwks.publish(OLD, NEW)
    fresh_berth.env = token_env(
        REGISTRY_AUTH_TOKEN_JWKS=jwks.url, REGISTRY_AUTH_TOKEN_JWKS_TTL="1", REGISTRY_AUTH_TOKEN_JWKS_REFRESH_INTERVAL="0"
    )
    fresh_berth.start()
    assert tags(fresh_berth, OLD.mint(GRANT)).status_code == 404
    jwks.publish(NEW)
    time.sleep(1.1)
    assert tags(fresh_berth, OLD.mint(GRANT)).status_code == 401  # a fresh token: not in the cache
    assert tags(fresh_berth, NEW.mint(GRANT)).status_code == 404


def test_unreachable_jwks_is_503_not_a_login_loop(fresh_berth: Berth) -> None:
    fresh_berth.env = token_env(REGISTRY_AUTH_TOKEN_JWKS=f"http://127.0.0.1:{free_port()}/jwks.json")
    fresh_berth.start()
    assert_error(tags(fresh_berth, OLD.mint(GRANT)), 503, "UNAVAILABLE")
    with fresh_berth.client() as c:
        r = c.get("/v2/")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer ")


def test_unusable_key_bundle_stops_the_gateway_with_a_configuration_error(fresh_berth: Berth, tmp_path: Path) -> None:
    bundle = tmp_path / "empty.pem"
    bundle.write_text("no keys here\n")
    fresh_berth.env = token_env(REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE=str(bundle), REGISTRY_AUTH_TOKEN_JWKS="")
    with pytest.raises(RuntimeError, match="exited with 2"):
        fresh_berth.start()
    assert "configuration error" in fresh_berth.log("gateway") and "rootcertbundle" in fresh_berth.log("gateway")


# In process: the pieces the HTTP tests cannot count.

SETTINGS = TokenAuthSettings(realm=REALM, service=SERVICE, issuer=ISSUER, jwks="", leeway=30)


def _verifier(tmp_path: Path, clock: list[float]) -> TokenVerifier:
    (tmp_path / "bundle.pem").write_bytes(OLD.public_pem())
    bundle = load_bundle(str(tmp_path / "bundle.pem"))
    assert list(bundle) == [libtrust_kid(OLD.private.public_key())]
    return TokenVerifier(SETTINGS, bundle, None, clock=lambda: clock[0])


def test_verified_tokens_are_cached_until_they_expire(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [time.time()]
    verifier = _verifier(tmp_path, clock)
    checks = []
    real = TokenVerifier._signed
    monkeypatch.setattr(TokenVerifier, "_signed", staticmethod(lambda *a: checks.append(1) or real(*a)))
    kid = libtrust_kid(OLD.private.public_key())
    token = OLD.mint(GRANT, kid=kid, exp=int(clock[0]) + 60)

    for _ in range(20):
        claims = asyncio.run(verifier.verify(token))
    assert len(checks) == 1
    assert claims.subject == "alice" and claims.grants[0].name == NAME

    clock[0] += 60 + 31  # past exp and the leeway: the cache no longer vouches for it
    with pytest.raises(Exception, match="expired"):
        asyncio.run(verifier.verify(token))
    assert len(checks) == 2


def test_a_cached_token_is_good_up_to_and_including_its_last_valid_instant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [time.time()]
    verifier = _verifier(tmp_path, clock)
    checks = []
    real = TokenVerifier._signed
    monkeypatch.setattr(TokenVerifier, "_signed", staticmethod(lambda *a: checks.append(1) or real(*a)))
    token = OLD.mint(GRANT, kid=libtrust_kid(OLD.private.public_key()), exp=int(clock[0]) + 60)

    valid_until = asyncio.run(verifier.verify(token)).valid_until
    clock[0] = valid_until  # exp plus the leeway, exactly: still good, from the cache
    asyncio.run(verifier.verify(token))
    assert len(checks) == 1
    clock[0] = math.nextafter(valid_until, math.inf)  # the least bit later: checked again, and refused
    with pytest.raises(Exception, match="expired"):
        asyncio.run(verifier.verify(token))
    assert len(checks) == 2


def _request(path: str, template: str, params: dict[str, str], headers: dict[str, str]) -> Request:
    route = APIRoute(template, lambda: None, methods=["GET"])
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": b"",
        "route": route,
        "path_params": params,
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    return Request(scope)


def test_identity_is_left_on_the_request(tmp_path: Path) -> None:
    controller = TokenAccessController(SETTINGS, _verifier(tmp_path, [time.time()]))
    check = access.dependency(controller, "")
    kid = libtrust_kid(OLD.private.public_key())
    token = OLD.mint([repo_access(NAME, "pull"), repo_access("other/repo", "*")], kid=kid, sub="bob")
    request = _request(f"/v2/{NAME}/tags/list", "/v2/{name:path}/tags/list", {"name": NAME}, bearer(token))
    asyncio.run(check(request))

    identity = request.state.identity
    assert identity.account == "bob" and identity.token == token
    assert [(g.type, g.name, sorted(g.actions)) for g in identity.grants] == [
        ("repository", NAME, ["pull"]),
        ("repository", "other/repo", ["*"]),
    ]
    assert identity.can("repository", NAME, "pull") and not identity.can("repository", NAME, "push")
    assert identity.can("repository", "other/repo", "delete")

    open_request = _request("/_ping", "/_ping", {}, {})
    asyncio.run(check(open_request))
    assert open_request.state.identity == access.ANONYMOUS
    assert open_request.state.identity.account is None
    assert not open_request.state.identity.can("repository", NAME, "pull")  # auth is on: nothing granted

    no_auth = _request("/v2/", "/v2/", {}, {})
    asyncio.run(access.dependency(access.create(AuthSettings()), "")(no_auth))
    assert no_auth.state.identity.account is None and no_auth.state.identity.can("repository", "x", "push")
