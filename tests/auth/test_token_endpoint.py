"""GET /token: Docker token auth over real HTTP, rules applied as an intersection."""

from __future__ import annotations

import datetime
import time

import httpx

from tests.auth.conftest import TOKEN_TTL
from tests.auth.support import (
    ISSUER,
    SERVICE,
    access,
    error_code,
    get_token,
    jwks_of,
    login,
    token_of,
    unverified_claims,
    verify_with_jwks,
)


def test_user_gets_the_intersection_of_request_and_rules(client: httpx.Client) -> None:
    # alice owns alice/*, may pull public/*, and may not touch bob/*: asking too much is no error.
    r = get_token(
        client, "repository:alice/app:pull,push,delete", "repository:public/base:pull,push", "repository:bob/app:pull", user="alice"
    )
    token = token_of(r)
    assert access(token) == {
        ("repository", "alice/app"): {"pull", "push", "delete"},
        ("repository", "public/base"): {"pull"},
        ("repository", "bob/app"): set(),
    }
    claims = unverified_claims(token)
    assert claims["sub"] == "alice"
    assert r.json()["access_token"] == token


def test_anonymous_gets_only_what_anonymous_rules_allow(client: httpx.Client) -> None:
    token = token_of(get_token(client, "repository:public/base:pull,push", "repository:alice/app:pull"))
    assert access(token) == {("repository", "public/base"): {"pull"}, ("repository", "alice/app"): set()}
    assert unverified_claims(token)["sub"] == ""


def test_anonymous_does_not_match_star_nor_personal_namespaces(client: httpx.Client) -> None:
    # "*" rules (team/* pull for every signed-in account) and ${account} never cover anonymous.
    token = token_of(get_token(client, "repository:team/app:pull", "repository:anonymous/app:pull"))
    assert access(token) == {("repository", "team/app"): set(), ("repository", "anonymous/app"): set()}


def test_several_scopes_in_one_parameter_and_repeated_resources_merge(client: httpx.Client) -> None:
    r = client.get(
        "/token",
        auth=login("alice"),
        params=[
            ("service", SERVICE),
            ("scope", "repository:alice/a:pull repository:alice/b:push"),
            ("scope", "repository:alice/a:push"),
        ],
    )
    assert access(token_of(r)) == {("repository", "alice/a"): {"pull", "push"}, ("repository", "alice/b"): {"push"}}
    entries = unverified_claims(token_of(r))["access"]
    assert [e["name"] for e in entries] == ["alice/a", "alice/b"]
    assert entries[0]["actions"] == ["pull", "push"]


def test_catalog_scope_for_admins_only(client: httpx.Client) -> None:
    admin = token_of(get_token(client, "registry:catalog:*", user="admin"))
    assert access(admin) == {("registry", "catalog"): {"*"}}
    alice = token_of(get_token(client, "registry:catalog:*", user="alice"))
    assert access(alice) == {("registry", "catalog"): set()}


def test_personal_namespace_is_the_account_s_own(client: httpx.Client) -> None:
    bob = token_of(get_token(client, "repository:bob/tool:push", "repository:alice/tool:push", user="bob"))
    assert access(bob) == {("repository", "bob/tool"): {"push"}, ("repository", "alice/tool"): set()}
    # Nested names stay inside the namespace; a prefix of another name does not.
    nested = token_of(get_token(client, "repository:bob/a/b/c:pull", "repository:bobby/x:pull", user="bob"))
    assert access(nested) == {("repository", "bob/a/b/c"): {"pull"}, ("repository", "bobby/x"): set()}


def test_groups_and_account_globs(client: httpx.Client) -> None:
    bob = token_of(get_token(client, "repository:shared/data:pull,push", user="bob"))  # group readers
    assert access(bob) == {("repository", "shared/data"): {"pull"}}
    alice = token_of(get_token(client, "repository:shared/data:pull", user="alice"))
    assert access(alice) == {("repository", "shared/data"): set()}
    team = token_of(get_token(client, "repository:team/app:pull,push", user="team-one"))  # "team-*" glob
    assert access(team) == {("repository", "team/app"): {"pull", "push"}}
    # First match wins: alice falls through to the later "*" rule, which only allows pull.
    alice_team = token_of(get_token(client, "repository:team/app:pull,push", user="alice"))
    assert access(alice_team) == {("repository", "team/app"): {"pull"}}
    admin = token_of(get_token(client, "repository:anything/at/all:pull,push,delete", user="admin"))
    assert access(admin) == {("repository", "anything/at/all"): {"pull", "push", "delete"}}


def test_plugin_class_is_dropped_and_host_port_names_parse(client: httpx.Client) -> None:
    token = token_of(get_token(client, "repository(plugin):alice/plug:pull", "repository:localhost:5000/alice/x:pull", user="alice"))
    assert access(token) == {("repository", "alice/plug"): {"pull"}, ("repository", "localhost:5000/alice/x"): set()}


def test_no_scope_gives_a_token_with_empty_access(client: httpx.Client) -> None:
    token = token_of(get_token(client, user="alice"))
    assert unverified_claims(token)["access"] == []


def test_wrong_password_is_401_and_does_not_reveal_the_account(client: httpx.Client) -> None:
    known = client.get("/token", params={"service": SERVICE}, auth=("alice", "not-her-password"))
    unknown = client.get("/token", params={"service": SERVICE}, auth=("nobody-here", "whatever"))
    for r in (known, unknown):
        assert r.status_code == 401
        assert error_code(r) == "UNAUTHORIZED"
        assert r.headers["www-authenticate"].startswith("Basic realm=")
        assert "token" not in r.json()
    assert known.json() == unknown.json()


def test_unknown_or_missing_service_is_400(client: httpx.Client) -> None:
    r = client.get("/token", params={"service": "elsewhere", "scope": "repository:alice/a:pull"}, auth=login("alice"))
    assert r.status_code == 400
    assert error_code(r) == "UNSUPPORTED_VALUE"
    r = client.get("/token", params={"scope": "repository:alice/a:pull"})
    assert r.status_code == 400
    assert error_code(r) == "MISSING_REQUIRED_FIELD"


def test_second_configured_service_is_the_audience(client: httpx.Client) -> None:
    r = client.get("/token", params={"service": "other", "scope": "repository:alice/a:pull"}, auth=login("alice"))
    assert unverified_claims(token_of(r))["aud"] == "other"


def test_account_parameter_must_match_the_credentials(client: httpx.Client) -> None:
    assert get_token(client, user="alice", account="alice").status_code == 200
    r = get_token(client, user="alice", account="admin")
    assert r.status_code == 400
    assert error_code(r) == "BAD_TOKEN_OPTION"


def test_claims_and_expiry(client: httpx.Client) -> None:
    before = int(time.time())
    r = get_token(client, "repository:alice/a:pull", user="alice", client_id="pytest")
    after = int(time.time())
    body = r.json()
    claims = verify_with_jwks(token_of(r), jwks_of(client))
    assert claims["iss"] == ISSUER and claims["aud"] == SERVICE and claims["sub"] == "alice"
    assert before <= claims["iat"] <= after
    assert claims["nbf"] == claims["iat"]
    assert claims["exp"] - claims["iat"] == TOKEN_TTL
    assert body["expires_in"] == TOKEN_TTL
    issued = datetime.datetime.strptime(body["issued_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    assert int(issued.timestamp()) == claims["iat"]
    assert r.headers["cache-control"] == "no-store"
    assert "refresh_token" not in body
    again = unverified_claims(token_of(get_token(client, "repository:alice/a:pull", user="alice")))
    assert again["jti"] != claims["jti"] and len(claims["jti"]) >= 16


def test_header_names_typ_alg_and_kid(client: httpx.Client) -> None:
    import jwt

    header = jwt.get_unverified_header(token_of(get_token(client, user="alice")))
    assert header["typ"] == "JWT"
    assert header["alg"] == "ES256"
    assert header["kid"] in {k["kid"] for k in jwks_of(client)["keys"]}


def test_offline_token_adds_a_refresh_token_for_accounts_only(client: httpx.Client) -> None:
    r = get_token(client, user="alice", offline_token="true", client_id="docker")
    assert len(r.json()["refresh_token"]) >= 32
    anonymous = get_token(client, offline_token="true")
    assert anonymous.status_code == 200 and "refresh_token" not in anonymous.json()
    assert "refresh_token" not in get_token(client, user="alice", offline_token="false").json()


def test_ping_and_unknown_paths(client: httpx.Client) -> None:
    assert client.get("/_ping").status_code == 200
    r = client.get("/v2/")
    assert r.status_code == 404 and error_code(r) == "NOT_FOUND"
    r = client.put("/token")
    assert r.status_code == 405 and error_code(r) == "UNSUPPORTED"
