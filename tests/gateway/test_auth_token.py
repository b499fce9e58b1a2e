"""Token auth at the gateway: each route's scope in the challenge, grants, and every refused token.

Tokens are minted here with test keys (ES256 behind a certificate, RS256 as a bare public key, both
in the rootcertbundle), as the token service would mint them.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.gateway import routes
from services.gateway.access import Access, requirements
from services.gateway.routes import search
from tests.support.auth import (
    ISSUER,
    REALM,
    SERVICE,
    SigningKey,
    bearer,
    hs256_token,
    repo_access,
    unsigned_token,
)
from tests.support.processes import Berth
from tests.support.registry import assert_error, checked_client, push_blob, push_image, raw_request

EC = SigningKey("ES256")
RSA = SigningKey("RS256")
STRANGER = SigningKey("ES256")  # a key the registry does not trust
DIGEST = "sha256:" + "ab" * 32


def token_env(**extra: str) -> dict[str, str]:
    return {
        "REGISTRY_AUTH_TYPE": "token",
        "REGISTRY_AUTH_TOKEN_REALM": REALM,
        "REGISTRY_AUTH_TOKEN_SERVICE": SERVICE,
        "REGISTRY_AUTH_TOKEN_ISSUER": ISSUER,
        **extra,
    }


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Berth]:
    workdir = tmp_path_factory.mktemp("berth-token")
    bundle = workdir / "bundle.pem"
    bundle.write_bytes(EC.certificate_pem() + RSA.public_pem())
    instance = Berth(workdir, env=token_env(REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE=str(bundle), REGISTRY_AUTH_TOKEN_JWKS=""))
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture()
def client(registry: Berth) -> Iterator[httpx.Client]:
    start = Path(registry.workdir / "gateway.log").stat().st_size
    with checked_client(registry.url) as c:
        yield c
    assert "Traceback" not in registry.log("gateway")[start:]


def challenge(scope: str | None = None, error: str | None = None) -> str:
    value = f'Bearer realm="{REALM}",service="{SERVICE}"'
    value += f',scope="{scope}"' if scope else ""
    value += f',error="{error}"' if error else ""
    return value


ROUTES = [
    ("GET", "/v2/{r}/blobs/{d}", "repository:{r}:pull"),
    ("HEAD", "/v2/{r}/blobs/{d}", "repository:{r}:pull"),
    ("DELETE", "/v2/{r}/blobs/{d}", "repository:{r}:delete"),
    ("POST", "/v2/{r}/blobs/uploads/", "repository:{r}:pull,push"),
    ("POST", "/v2/{r}/blobs/uploads/?digest={d}", "repository:{r}:pull,push"),
    ("POST", "/v2/{r}/blobs/uploads/?mount={d}&from=other/source", "repository:{r}:pull,push repository:other/source:pull"),
    ("GET", "/v2/{r}/blobs/uploads/some-upload", "repository:{r}:pull,push"),
    ("PATCH", "/v2/{r}/blobs/uploads/some-upload", "repository:{r}:pull,push"),
    ("PUT", "/v2/{r}/blobs/uploads/some-upload?digest={d}", "repository:{r}:pull,push"),
    ("DELETE", "/v2/{r}/blobs/uploads/some-upload", "repository:{r}:pull,push"),
    ("GET", "/v2/{r}/manifests/v1", "repository:{r}:pull"),
    ("HEAD", "/v2/{r}/manifests/{d}", "repository:{r}:pull"),
    ("PUT", "/v2/{r}/manifests/v1", "repository:{r}:pull,push"),
    ("DELETE", "/v2/{r}/manifests/{d}", "repository:{r}:delete"),
    ("GET", "/v2/{r}/tags/list", "repository:{r}:pull"),
    ("HEAD", "/v2/{r}/tags/list", "repository:{r}:pull"),
    ("GET", "/v2/{r}/referrers/{d}", "repository:{r}:pull"),
    ("GET", "/v2/_catalog", "registry:catalog:*"),
    ("GET", "/v2/", None),
    ("HEAD", "/v2/", None),
]


@pytest.mark.parametrize(("method", "path", "scope"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_challenge_names_exactly_what_the_route_needs(client: httpx.Client, method: str, path: str, scope: str | None) -> None:
    name = "team/app"
    r = client.request(method, path.format(r=name, d=DIGEST), content=b"x" if method in ("PUT", "PATCH") else None)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == challenge(scope.format(r=name) if scope else None)
    if method != "HEAD":
        error = assert_error(r, 401, "UNAUTHORIZED")
        needed = [f"{a['type']}:{a['name']}:{a['action']}" for a in error.get("detail") or []]
        wanted = [
            f"{s.rsplit(':', 1)[0]}:{action}" for s in (scope or "").format(r=name).split() for action in s.rsplit(":", 1)[1].split(",")
        ]
        assert needed == wanted


@pytest.mark.parametrize("path", ["/", "/_ping", "/v1/_ping"])
def test_open_routes_never_ask_for_credentials(client: httpx.Client, path: str) -> None:
    assert client.get(path).status_code == 200
    r = client.get(path, headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 200
    assert "www-authenticate" not in r.headers


def test_invalid_names_are_refused_before_any_challenge(client: httpx.Client) -> None:
    r = client.get("/v2/Bad%22Name/manifests/v1")
    assert_error(r, 400, "NAME_INVALID")
    assert "www-authenticate" not in r.headers
    r = client.post(f"/v2/team/app/blobs/uploads/?mount={DIGEST}&from=UPPER")
    assert_error(r, 400, "NAME_INVALID")


def test_sufficient_tokens_push_pull_list_and_delete(client: httpx.Client, repo: str) -> None:
    client.headers.update(bearer(EC.mint([repo_access(repo, "pull", "push")])))
    digest, _ = push_image(client, repo, "v1")

    client.headers.update(bearer(RSA.mint([repo_access(repo, "pull")])))
    assert client.get("/v2/").status_code == 200
    assert client.get(f"/v2/{repo}/manifests/v1").status_code == 200
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["v1"]

    client.headers.update(bearer(EC.mint([{"type": "registry", "name": "catalog", "actions": ["*"]}])))
    assert repo in client.get("/v2/_catalog", params={"n": 10000}).json()["repositories"]

    client.headers.update(bearer(RSA.mint([repo_access(repo, "*")])))  # "*" is every action
    assert client.delete(f"/v2/{repo}/manifests/{digest}").status_code == 202


def test_token_without_kid_verified_by_the_one_bundle_key(client: httpx.Client, repo: str) -> None:
    r = client.get(f"/v2/{repo}/tags/list", headers=bearer(EC.mint([repo_access(repo, "pull")], kid=False)))
    assert r.status_code == 404  # past auth: the repository does not exist
    r = client.get(f"/v2/{repo}/tags/list", headers=bearer(STRANGER.mint([repo_access(repo, "pull")], kid=False)))
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


def test_insufficient_actions_are_a_401_with_insufficient_scope(client: httpx.Client, repo: str) -> None:
    pull_only = EC.mint([repo_access(repo, "pull"), repo_access("other/repo", "pull", "push")])
    r = client.post(f"/v2/{repo}/blobs/uploads/", headers=bearer(pull_only))
    error = assert_error(r, 401, "DENIED")
    assert r.headers["www-authenticate"] == challenge(f"repository:{repo}:pull,push", "insufficient_scope")
    assert error["detail"] == [
        {"type": "repository", "name": repo, "action": "pull"},
        {"type": "repository", "name": repo, "action": "push"},
    ]
    r = client.delete(f"/v2/{repo}/manifests/{DIGEST}", headers=bearer(pull_only))
    assert r.headers["www-authenticate"] == challenge(f"repository:{repo}:delete", "insufficient_scope")
    r = client.get("/v2/_catalog", headers=bearer(EC.mint([{"type": "registry", "name": "catalog", "actions": ["pull"]}])))
    assert r.headers["www-authenticate"] == challenge("registry:catalog:*", "insufficient_scope")
    r = client.head(f"/v2/{repo}/manifests/v1", headers=bearer(EC.mint([repo_access(repo + "-other", "pull")])))
    assert r.status_code == 401 and "insufficient_scope" in r.headers["www-authenticate"]


def test_mount_needs_pull_on_the_source_too(client: httpx.Client, repo: str) -> None:
    source = repo + "-source"
    client.headers.update(bearer(EC.mint([repo_access(source, "pull", "push")])))
    digest = push_blob(client, source, b"shared layer " + repo.encode())

    target_only = EC.mint([repo_access(repo, "pull", "push")])
    url = f"/v2/{repo}/blobs/uploads/?mount={digest}&from={source}"
    r = client.post(url, headers=bearer(target_only))
    assert_error(r, 401, "DENIED")
    assert r.headers["www-authenticate"] == challenge(f"repository:{repo}:pull,push repository:{source}:pull", "insufficient_scope")

    both = EC.mint([repo_access(repo, "pull", "push"), repo_access(source, "pull")])
    r = client.post(url, headers=bearer(both))
    assert r.status_code == 201, r.text
    assert r.headers["docker-content-digest"] == digest


def _tampered_payload(token: str, **changes: object) -> str:
    header, body, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims.update(changes)
    new_body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{new_body}.{signature}"


def _tampered_signature(token: str) -> str:
    header, body, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{header}.{body}.{base64.urlsafe_b64encode(bytes(raw)).rstrip(b'=').decode()}"


NAME = "team/app"
GRANT = [repo_access(NAME, "pull")]
BAD_TOKENS = {
    "expired beyond leeway": lambda: EC.mint(GRANT, exp=int(time.time()) - 120),
    "not valid yet": lambda: EC.mint(GRANT, nbf=int(time.time()) + 3600),
    "no exp": lambda: EC.mint(GRANT, exp=None),
    "wrong audience": lambda: EC.mint(GRANT, aud="another-registry"),
    "audience list without us": lambda: EC.mint(GRANT, aud=["a", "b"]),
    "wrong issuer": lambda: RSA.mint(GRANT, iss="someone-else"),
    "unknown kid": lambda: EC.mint(GRANT, kid="AAAA:BBBB:CCCC:DDDD:EEEE:FFFF:GGGG:HHHH:IIII:JJJJ:KKKK:LLLL"),
    "untrusted key": lambda: STRANGER.mint(GRANT),
    "untrusted key posing as a trusted kid": lambda: STRANGER.mint(GRANT, kid=EC.kid),
    "RS256 header on the EC key": lambda: RSA.mint(GRANT, kid=EC.kid),
    "tampered payload": lambda: _tampered_payload(EC.mint([]), access=GRANT),
    "tampered signature": lambda: _tampered_signature(RSA.mint(GRANT)),
    "alg none": lambda: unsigned_token(EC.kid, GRANT),
    "HS256 keyed with the EC public key": lambda: hs256_token(EC.public_pem(), EC.kid, GRANT),
    "HS256 keyed with the RSA public key": lambda: hs256_token(RSA.public_pem(), RSA.kid, GRANT),
    "not a JWT": lambda: "abc.def",
    "garbage segments": lambda: "a.b.c",
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
def test_refused_tokens(client: httpx.Client, case: str) -> None:
    r = client.get(f"/v2/{NAME}/tags/list", headers=bearer(BAD_TOKENS[case]()))
    assert_error(r, 401, "UNAUTHORIZED")
    assert r.headers["www-authenticate"] == challenge(f"repository:{NAME}:pull", "invalid_token")


def test_clock_leeway_is_honoured(client: httpx.Client) -> None:
    token = EC.mint(GRANT, exp=int(time.time()) - 5, nbf=int(time.time()) + 5)  # leeway is 30 s
    assert client.get(f"/v2/{NAME}/tags/list", headers=bearer(token)).status_code == 404


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Bearer  \t", "Basic dXNlcjpwYXNz", "Token abc", "", "BearerX abc"])
def test_malformed_authorization_headers_get_a_plain_challenge(registry: Berth, header: str) -> None:
    r = raw_request(registry.http_port, "GET", f"/v2/{NAME}/tags/list", {"Authorization": header})
    assert r.status == 401
    assert [e["code"] for e in r.json()["errors"]] == ["UNAUTHORIZED"]
    assert r.headers["www-authenticate"] == challenge(f"repository:{NAME}:pull")


def test_scheme_is_case_insensitive_and_repeated_use_stays_valid(client: httpx.Client) -> None:
    token = RSA.mint(GRANT)
    for scheme in ("bearer", "BEARER", "Bearer"):
        assert client.get(f"/v2/{NAME}/tags/list", headers={"Authorization": f"{scheme} {token}"}).status_code == 404


def test_scopes_under_a_path_prefix(fresh_berth: Berth, tmp_path: Path) -> None:
    (tmp_path / "bundle.pem").write_bytes(EC.public_pem())
    fresh_berth.env = token_env(
        REGISTRY_HTTP_PREFIX="/registry", REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE=str(tmp_path / "bundle.pem"), REGISTRY_AUTH_TOKEN_JWKS=""
    )
    fresh_berth.start()
    with fresh_berth.client() as c:
        assert c.get("/registry/_ping").status_code == 200
        assert c.get("/registry/v2/").headers["www-authenticate"] == challenge()
        r = c.put(f"/registry/v2/{NAME}/manifests/v1", content=b"{}")
        assert r.headers["www-authenticate"] == challenge(f"repository:{NAME}:pull,push")
        assert c.get(f"/registry/v2/{NAME}/tags/list", headers=bearer(EC.mint(GRANT))).status_code == 404


def test_search_takes_credentials_if_sent_and_never_asks(client: httpx.Client) -> None:
    # Past the access check, whatever the search service then says (200, or 503 without one).
    for headers in ({}, bearer(EC.mint([]))):
        r = client.get("/v1/search", params={"q": "app"}, headers=headers)
        assert r.status_code != 401 and "www-authenticate" not in r.headers
    r = client.get("/v1/search", params={"q": "app"}, headers=bearer(STRANGER.mint([])))
    assert_error(r, 401, "UNAUTHORIZED")
    assert r.headers["www-authenticate"] == challenge(error="invalid_token")


def test_every_route_has_an_access_rule_and_unknown_ones_fail_closed() -> None:
    for module in (*routes._MODULES, search):
        for route in module.router.routes:
            for method in route.methods:
                assert route.path in requirements.OTHER_ROUTES or method in requirements.REPOSITORY_ROUTES.get(route.path, {}), (
                    f"{method} {route.path} has no rule in services/gateway/access/requirements.py"
                )
    star = (Access("repository", "a/b", "*"),)
    assert requirements.for_template("/v2/{name:path}/blobs/{digest}", "POST", {"name": "a/b"}, {}) == star
    assert requirements.for_template("/v2/{name:path}/something-new", "GET", {"name": "a/b"}, {}) == star
    assert requirements.for_template("/v1/something-new", "GET", {}, {}) == requirements.AUTHENTICATED
