"""Every route of the token service and the search service answers bad requests in the registry's
error envelope, with a registered code, and an unhandled error as a generic UNKNOWN with the request
id: the handlers of services.common.http_errors, installed by both apps (and the gateway, whose own
tests are tests/gateway/test_internal_errors.py and test_protocol.py).

In process (TestClient), so each route is reached with the same battery of bad requests: an unknown
path below it, every method it does not serve, a body that is not JSON, a query of bad values, and
credentials that cannot be read."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.routing import Route

from services.common import errors
from services.common.config import Settings

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
BAD_QUERY = [
    ("service", "\x00"),
    ("scope", ":::"),
    ("offline_token", "maybe"),
    ("client_id", "\t"),
    ("n", "ten"),
    ("page", "-1"),
    ("q", "a" * 300),
    ("account", "x" * 300),
]
BAD_HEADERS = [
    {},
    {"Authorization": "Basic !!!"},
    {"Authorization": "Basic " + base64.b64encode(b"\xff:\xfe").decode()},
    {"Authorization": "Bearer a b"},
    {"Authorization": "Digest x"},
    {"Content-Type": "application/json"},
    {"Content-Type": "application/x-www-form-urlencoded"},
]
BAD_BODIES = [b"", b"{not json", b"[" * 5000, b"%zz=%", b'{"scopes": [1]}', b"\xff\xfe"]
SECRET = "secret-internal-detail /srv/berth/private"


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    tmp = tmp_path_factory.mktemp("http-errors")
    return Settings.model_validate(
        {
            "token_service": {
                "key": str(tmp / "key.pem"),
                "database": f"sqlite:///{tmp / 'users.db'}",
                "rate_limit": {"attempts": 100_000, "window": 60},
            },
            "search": {"database": f"sqlite:///{tmp / 'index.db'}"},
        }
    )


def auth_app(settings: Settings) -> FastAPI:
    from services.auth.app import create_app

    return create_app(settings)


def search_app(settings: Settings) -> FastAPI:
    from services.search.app import create_app

    return create_app(settings)


APPS = {"auth": auth_app, "search": search_app}


@pytest.fixture(scope="module", params=list(APPS))
def service(request: pytest.FixtureRequest, settings: Settings) -> Iterator[tuple[str, TestClient]]:
    with TestClient(APPS[request.param](settings), raise_server_exceptions=False) as client:
        yield request.param, client


def routes_of(app: Any) -> dict[str, set[str]]:
    """Each path of the app, with every method some route serves there."""
    found: dict[str, set[str]] = {}
    for route in app.routes:
        if isinstance(route, Route) and route.methods:
            found.setdefault(route.path, set()).update(route.methods)
    assert found
    return found


def assert_envelope(service: str, r: httpx.Response, what: str) -> None:
    """A non-2xx answer is the envelope with registered codes (and no-store from the token service)."""
    if r.status_code < 300:
        return
    assert r.status_code < 500, f"{service}: {r.status_code} {r.text[:300]} for {what}"
    if r.request.method == "HEAD":
        return
    assert r.headers["content-type"].split(";")[0] == "application/json", f"{service}: {r.text[:300]} for {what}"
    body = json.loads(r.content)
    assert isinstance(body["errors"], list) and body["errors"], f"{service}: {body} for {what}"
    for error in body["errors"]:
        assert set(error) <= {"code", "message", "detail"}, f"{service}: {body} for {what}"
        assert errors.lookup(error["code"]).name == error["code"], f"{service}: unregistered code in {body} for {what}"
        assert isinstance(error["message"], str), f"{service}: {body} for {what}"
    if service == "auth":
        assert r.headers["cache-control"] == "no-store", f"{service}: {r.headers} for {what}"


def test_every_route_answers_bad_requests_in_the_envelope(service: tuple[str, TestClient]) -> None:
    name, client = service
    for template, methods in routes_of(client.app).items():
        path = template.replace("{", "").replace("}", "")
        for method in METHODS:
            r = client.request(method, path)
            assert_envelope(name, r, f"{method} {path}")
            if method not in methods:
                assert r.status_code == 405, f"{name}: {method} {path}: {r.status_code}"
                assert set(r.headers["allow"].split(", ")) == methods, f"{name}: {method} {path}"
                if method != "HEAD":
                    assert r.json()["errors"][0]["code"] == "UNSUPPORTED"
        for unknown in (path.rstrip("/") + "/no-such-thing", "/no/such/route" + path):
            r = client.get(unknown)
            assert r.status_code == 404 and r.json()["errors"][0]["code"] == "NOT_FOUND", f"{name}: {unknown}"
        for method in sorted(methods):
            for headers in BAD_HEADERS:
                r = client.request(method, path, params=BAD_QUERY, headers=headers)
                assert_envelope(name, r, f"{method} {path}?<bad query> {headers}")
                for body in BAD_BODIES if method in ("POST", "PUT", "PATCH") else ():
                    r = client.request(method, path, headers=headers, content=body)
                    assert_envelope(name, r, f"{method} {path} {headers} body {body[:20]!r}")


def assert_generic_500(r: httpx.Response) -> None:
    assert r.status_code == 500
    assert r.json() == {"errors": [{"code": "UNKNOWN", "message": "internal error", "detail": {"request_id": r.headers["x-request-id"]}}]}
    assert SECRET not in r.text and "RuntimeError" not in r.text


def test_an_unhandled_error_in_the_token_service_is_a_generic_500(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    from services.auth.app import create_app
    from services.auth.service import TokenService

    tokens = TokenService(settings.token_service, settings.cache)

    def broken(service: str) -> str:
        raise RuntimeError(SECRET)

    tokens.check_service = broken  # type: ignore[method-assign]
    with TestClient(create_app(settings, tokens), raise_server_exceptions=False) as client:
        r = client.get("/token", params={"service": "berth"})
        assert_generic_500(r)
        assert r.headers["cache-control"] == "no-store"
        # An OAuth2 answer adds its RFC 6749 fields, which say no more.
        r = client.post("/token", data={"grant_type": "password", "service": "berth"})
        assert r.status_code == 500 and r.headers["cache-control"] == "no-store"
        assert r.json() == {
            "errors": [{"code": "UNKNOWN", "message": "internal error", "detail": {"request_id": r.headers["x-request-id"]}}],
            "error": "invalid_request",
            "error_description": "internal error",
        }
    assert SECRET in caplog.text  # the log has it, under the request id


def test_an_unhandled_error_in_the_search_service_is_a_generic_500(settings: Settings, tmp_path: Path) -> None:
    from services.search.app import create_app
    from services.search.index import Index

    index = Index.open(f"sqlite:///{tmp_path / 'index.db'}")

    def broken(*args: Any) -> Any:
        raise RuntimeError(SECRET)

    index.search = broken  # type: ignore[method-assign]
    with TestClient(create_app(settings, index), raise_server_exceptions=False) as client:
        assert_generic_500(client.get("/v1/search", params={"q": "x"}))


def test_codes_are_registered_once() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        errors._register("UNKNOWN", "again", 500)
    assert errors.lookup("SCOPE_INVALID") is errors.SCOPE_INVALID and errors.SCOPE_INVALID.status == 400
