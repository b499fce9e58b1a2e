"""POST /token (OAuth2 password and refresh_token grants), refresh tokens, revocation, and logs that
never show a secret."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from tests.auth.conftest import TOKEN_TTL
from tests.auth.support import (
    SERVICE,
    USERS,
    access,
    add_users,
    berth_cli,
    database_url,
    error_code,
    get_token,
    login,
    token_service,
    unverified_claims,
)
from tests.support.processes import Berth


def password_grant(client: httpx.Client, user: str, password: str | None = None, **extra: str) -> httpx.Response:
    form = {
        "grant_type": "password",
        "username": user,
        "password": password or USERS[user][0],
        "service": SERVICE,
        "client_id": "pytest",
        **extra,
    }
    return client.post("/token", data=form)


def refresh_grant(client: httpx.Client, refresh_token: str, **extra: str) -> httpx.Response:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "service": SERVICE, "client_id": "pytest", **extra}
    return client.post("/token", data=form)


def refresh_token_for(client: httpx.Client, user: str) -> str:
    r = password_grant(client, user, access_type="offline")
    assert r.status_code == 200, r.text
    return str(r.json()["refresh_token"])


def assert_oauth_error(r: httpx.Response, status: int, code: str, oauth_error: str) -> None:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert error_code(r) == code
    assert body["error"] == oauth_error
    assert body["error_description"]
    assert "access_token" not in body


def test_password_grant_returns_granted_scope(client: httpx.Client) -> None:
    r = password_grant(client, "alice", scope="repository:alice/app:pull,push repository:bob/app:pull")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == TOKEN_TTL
    assert body["issued_at"].endswith("Z")
    assert body["scope"] == "repository:alice/app:pull,push"  # bob/app granted nothing: not listed
    assert "refresh_token" not in body  # access_type defaults to online
    assert access(body["access_token"]) == {("repository", "alice/app"): {"pull", "push"}, ("repository", "bob/app"): set()}
    assert r.headers["cache-control"] == "no-store"


def test_refresh_grant_echoes_the_refresh_token_and_rescopes(client: httpx.Client) -> None:
    refresh = refresh_token_for(client, "alice")
    r = refresh_grant(client, refresh, scope="repository:alice/other:push repository:public/x:pull")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["refresh_token"] == refresh
    claims = unverified_claims(body["access_token"])
    assert claims["sub"] == "alice"
    assert access(body["access_token"]) == {("repository", "alice/other"): {"push"}, ("repository", "public/x"): {"pull"}}
    # Reusable until revoked or expired.
    assert refresh_grant(client, refresh).status_code == 200


def test_refresh_token_from_get_with_offline_token(client: httpx.Client) -> None:
    refresh = get_token(client, user="bob", offline_token="1", client_id="docker").json()["refresh_token"]
    r = refresh_grant(client, refresh, scope="repository:bob/x:pull")
    assert r.status_code == 200
    assert unverified_claims(r.json()["access_token"])["sub"] == "bob"


def test_refresh_token_is_bound_to_its_service(client: httpx.Client) -> None:
    refresh = refresh_token_for(client, "alice")
    r = refresh_grant(client, refresh, service="other")
    assert_oauth_error(r, 401, "UNAUTHORIZED", "invalid_grant")


def test_unknown_refresh_token_is_refused(client: httpx.Client) -> None:
    assert_oauth_error(refresh_grant(client, "made-up-token"), 401, "UNAUTHORIZED", "invalid_grant")
    assert_oauth_error(refresh_grant(client, "x" * 5000), 401, "UNAUTHORIZED", "invalid_grant")


def test_revoked_refresh_token_cannot_be_replayed(client: httpx.Client) -> None:
    refresh = refresh_token_for(client, "alice")
    assert refresh_grant(client, refresh).status_code == 200
    r = client.post("/revoke", data={"token": refresh}, auth=login("alice"))
    assert r.status_code == 200
    assert_oauth_error(refresh_grant(client, refresh), 401, "UNAUTHORIZED", "invalid_grant")
    # Revoking again, or an unknown token, is still 200 (RFC 7009).
    assert client.post("/revoke", data={"token": refresh}, auth=login("alice")).status_code == 200
    assert client.post("/revoke", data={"token": "never-issued"}, auth=login("alice")).status_code == 200


def test_only_the_owner_can_revoke(client: httpx.Client) -> None:
    refresh = refresh_token_for(client, "alice")
    assert client.post("/revoke", data={"token": refresh}, auth=login("bob")).status_code == 200
    assert refresh_grant(client, refresh).status_code == 200  # still alive: bob's call revoked nothing
    r = client.post("/revoke", data={"token": refresh})
    assert r.status_code == 401 and error_code(r) == "UNAUTHORIZED"
    r = client.post("/revoke", data={"token": refresh}, auth=("alice", "wrong"))
    assert r.status_code == 401
    assert refresh_grant(client, refresh).status_code == 200


def test_expired_refresh_token_is_refused(client: httpx.Client, auth: Berth) -> None:
    refresh = refresh_token_for(client, "alice")
    engine = create_engine(database_url(auth))
    with engine.begin() as conn:  # age alice's live refresh tokens past their expiry
        conn.execute(text("UPDATE berth_refresh_tokens SET expires_at = 1 WHERE account = 'alice' AND revoked = 0"))
    engine.dispose()
    assert_oauth_error(refresh_grant(client, refresh), 401, "UNAUTHORIZED", "invalid_grant")


def test_wrong_password_on_post(client: httpx.Client) -> None:
    assert_oauth_error(password_grant(client, "alice", "wrong"), 401, "UNAUTHORIZED", "invalid_grant")
    assert_oauth_error(password_grant(client, "ghost", "wrong"), 401, "UNAUTHORIZED", "invalid_grant")


def test_malformed_oauth_requests(client: httpx.Client) -> None:
    assert_oauth_error(password_grant(client, "alice", client_id=""), 400, "MISSING_REQUIRED_FIELD", "invalid_request")
    assert_oauth_error(password_grant(client, "alice", service=""), 400, "MISSING_REQUIRED_FIELD", "invalid_request")
    assert_oauth_error(password_grant(client, "alice", service="elsewhere"), 400, "UNSUPPORTED_VALUE", "invalid_request")
    assert_oauth_error(password_grant(client, "alice", access_type="forever"), 400, "UNSUPPORTED_VALUE", "invalid_request")
    assert_oauth_error(password_grant(client, "alice", grant_type="authorization_code"), 400, "UNSUPPORTED_VALUE", "unsupported_grant_type")
    assert_oauth_error(password_grant(client, "alice", scope="repository:UPPER:pull"), 400, "SCOPE_INVALID", "invalid_scope")
    r = client.post("/token", json={"grant_type": "password"})
    assert_oauth_error(r, 400, "UNSUPPORTED_VALUE", "invalid_request")
    r = client.post("/token", content=b"grant_type=password&username=\xff", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_oauth_error(r, 400, "BAD_TOKEN_OPTION", "invalid_request")


def test_password_change_and_removal_revoke_refresh_tokens(tmp_path: Path) -> None:
    berth = token_service(tmp_path)
    add_users(berth, {"carol": ("carol-password", [])})
    berth.start("auth")
    try:
        with berth.auth_client() as client:
            form = {
                "grant_type": "password",
                "username": "carol",
                "password": "carol-password",
                "service": SERVICE,
                "client_id": "pytest",
                "access_type": "offline",
            }
            first = client.post("/token", data=form).json()["refresh_token"]
            assert berth_cli(berth, "users", "passwd", "carol", "--password", "new-password").returncode == 0
            assert refresh_grant(client, first).status_code == 401
            second = client.post("/token", data={**form, "password": "new-password"}).json()["refresh_token"]
            assert refresh_grant(client, second).status_code == 200
            assert berth_cli(berth, "users", "remove", "carol").returncode == 0
            assert refresh_grant(client, second).status_code == 401
            # A new account of the same name does not inherit the old one's tokens.
            add_users(berth, {"carol": ("carol-password", [])})
            assert refresh_grant(client, second).status_code == 401
    finally:
        berth.stop()


def test_no_secret_reaches_the_logs(tmp_path: Path) -> None:
    berth = token_service(tmp_path, env={"REGISTRY_LOGLEVEL": "debug"})
    secret_pw = "Pa55-unique-s3cret"
    add_users(berth, {"dave": (secret_pw, [])})
    berth.start("auth")
    try:
        with berth.auth_client() as client:
            seen = []
            r = client.get(
                "/token", params={"service": SERVICE, "offline_token": "true", "scope": "repository:dave/a:pull"}, auth=("dave", secret_pw)
            )
            seen += [r.json()["token"], r.json()["refresh_token"]]
            form = {
                "grant_type": "password",
                "username": "dave",
                "password": secret_pw,
                "service": SERVICE,
                "client_id": "pytest",
                "access_type": "offline",
            }
            body = client.post("/token", data=form).json()
            seen += [body["access_token"], body["refresh_token"]]
            seen.append(refresh_grant(client, body["refresh_token"]).json()["access_token"])
            client.post("/revoke", data={"token": body["refresh_token"]}, auth=("dave", secret_pw))
            client.get("/token", params={"service": SERVICE}, auth=("dave", "Wrong-unique-guess"))
            client.post("/token", data={**form, "password": "Other-unique-guess"})
            client.post("/authorize", json={"scopes": []}, headers={"Authorization": f"Bearer {seen[0]}"})
        logged = berth.log("auth")
        assert "issued a token" in logged and "GET /token" in logged  # debug logging was on
        for secret in [secret_pw, "Wrong-unique-guess", "Other-unique-guess", *seen]:
            assert secret not in logged
    finally:
        berth.stop()
