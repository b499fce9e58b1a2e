"""Observability end to end, with real processes: one request id across the gateway's answer, its
JSON log and the search service's log of the event it caused; per-route HTTP metrics, notification
metrics, token and access-denial metrics on each service's /metrics."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.common import config
from tests.auth.support import add_users, token_service
from tests.images import sha256
from tests.support.processes import Berth
from tests.support.registry import image_manifest, push_blob, push_image

MANIFESTS = "/v2/{name:path}/manifests/{reference}"
BLOBS = "/v2/{name:path}/blobs/{digest}"
UPLOADS = "/v2/{name:path}/blobs/uploads/"


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``/metrics`` as {(sample name, labels): value}, parsed by prometheus_client's own parser."""
    r = httpx.get(f"{url}/metrics", timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(r.text)
        for sample in family.samples
    }


def value(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a service's log, each of which must be one JSON object."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        record = json.loads(line)
        assert isinstance(record, dict) and {"time", "level", "service", "logger", "message"} <= record.keys(), line
        out.append(record)
    return out


def eventually(check: Callable[[], Any], within: float = 5.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


@pytest.fixture()
def berth(tmp_path: Path) -> Iterator[Berth]:
    instance = Berth(
        tmp_path,
        env={
            "REGISTRY_SEARCH_BACKEND": "sqlalchemy",
            "REGISTRY_LOG_FORMATTER": "json",
            # uvicorn's access log is written at debug only.
            "REGISTRY_LOGLEVEL": "debug",
        },
    )
    instance.start("blobstore", "search", "gateway")
    yield instance
    instance.stop()


def test_one_request_id_from_the_gateway_to_the_search_service(berth: Berth) -> None:
    with berth.client() as client:
        push_image(client, "obs/app", "v0")
        config_blob, layer = b'{"architecture":"amd64","os":"linux"}', b"layer"
        for blob in (config_blob, layer):
            push_blob(client, "obs/app", blob)
        manifest = image_manifest(config_blob, [layer])
        r = client.put(
            "/v2/obs/app/manifests/v1",
            content=json.dumps(manifest),
            headers={"Content-Type": manifest["mediaType"], "X-Request-Id": "abc123"},
        )
        assert r.status_code == 201, r.text
        assert r.headers["x-request-id"] == "abc123"
        # Without one, the gateway makes one up; one it cannot use safely is replaced.
        made = client.get("/v2/").headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", made)
        assert client.get("/v2/", headers={"X-Request-Id": "a b\tc"}).headers["x-request-id"] != "a b\tc"

    def gateway_line() -> dict[str, Any] | None:
        return next(
            (
                entry
                for entry in json_lines(berth.workdir / "gateway.log")
                if entry.get("request_id") == "abc123" and "PUT /v2/obs/app/manifests/v1" in entry["message"]
            ),
            None,
        )

    line = eventually(gateway_line)
    assert line is not None, "the gateway's access log has no line for the request"
    assert line["service"] == "gateway" and line["logger"] == "uvicorn.access"

    def search_line() -> dict[str, Any] | None:
        return next(
            (
                entry
                for entry in json_lines(berth.workdir / "search.log")
                if entry.get("request_id") == "abc123" and "obs/app:v1 pushed" in entry["message"]
            ),
            None,
        )

    line = eventually(search_line)
    assert line is not None, "the search service did not log the push event under the request's id"
    assert line["service"] == "search"
    # The tag pushed earlier came from another request, logged under its own id.
    other = [entry for entry in json_lines(berth.workdir / "search.log") if "obs/app:v0 pushed" in entry["message"]]
    assert other and other[0]["request_id"] not in ("", "abc123")

    # The id travelled in gRPC metadata: the blobstore logged its call (PutManifest) under it.
    blobstore = [entry for entry in json_lines(berth.workdir / "blobstore.log") if entry.get("request_id") == "abc123"]
    assert any("PutManifest OK" in entry["message"] for entry in blobstore), blobstore
    assert all(entry["service"] == "blobstore" for entry in blobstore)


def test_http_and_notification_metrics(berth: Berth) -> None:
    with berth.client() as client:
        push_image(client, "obs/metrics", "v1", layers=[b"x" * 10_000])
        assert client.get("/v2/obs/metrics/manifests/v1").status_code == 200
        assert client.head("/v2/obs/metrics/manifests/v1").status_code == 200
        assert client.get(f"/v2/obs/metrics/blobs/{sha256(b'x' * 10_000)}").content == b"x" * 10_000
        assert client.get("/v2/obs/metrics/manifests/nope").status_code == 404
        assert client.get("/no/such/path").status_code == 404

    def delivered() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
        metrics = scrape(berth.url)
        return metrics if value(metrics, "berth_notifications_sent_total", endpoint="search") >= 1 else None

    metrics = eventually(delivered)
    assert metrics is not None, "no notification counted as sent to the search service"
    gw = {"service": "gateway"}
    assert value(metrics, "berth_http_requests_total", **gw, method="PUT", route=MANIFESTS, status="201") == 1
    # GETs: ours, and the search service's reads of what it indexes (descriptions).
    assert value(metrics, "berth_http_requests_total", **gw, method="GET", route=MANIFESTS, status="200") >= 1
    assert value(metrics, "berth_http_requests_total", **gw, method="HEAD", route=MANIFESTS, status="200") == 1
    assert value(metrics, "berth_http_requests_total", **gw, method="GET", route=MANIFESTS, status="404") == 1
    assert value(metrics, "berth_http_requests_total", **gw, method="GET", route=BLOBS, status="200") >= 1
    assert value(metrics, "berth_http_requests_total", **gw, method="POST", route=UPLOADS, status="201") == 2
    assert value(metrics, "berth_http_requests_total", **gw, method="GET", route="unmatched", status="404") == 1
    assert value(metrics, "berth_http_request_duration_seconds_count", **gw, method="PUT", route=MANIFESTS) == 1
    # Bytes: the layer went in through the upload route and out through the blob route.
    assert value(metrics, "berth_http_request_bytes_total", **gw, route=UPLOADS) >= 10_000
    assert value(metrics, "berth_http_request_bytes_total", **gw, route=MANIFESTS) > 0
    assert value(metrics, "berth_http_response_bytes_total", **gw, route=BLOBS) >= 10_000
    assert value(metrics, "berth_http_response_bytes_total", **gw, route=MANIFESTS) > 0
    # Route templates only: no raw path becomes a label.
    routes = {dict(labels).get("route") for (name, labels) in metrics if name == "berth_http_requests_total"}
    assert not any(route and "obs/metrics" in route for route in routes), routes
    assert ("berth_notification_queue_depth", frozenset({("endpoint", "search")})) in metrics
    assert value(metrics, "berth_notification_failures_total", endpoint="search") == 0

    search = scrape(berth.search_url)
    assert value(search, "berth_http_requests_total", service="search", method="POST", route="/events", status="200") >= 1


def test_token_and_access_metrics(tmp_path: Path) -> None:
    berth = token_service(tmp_path)
    berth.env.update(
        REGISTRY_AUTH_TYPE="token",
        REGISTRY_AUTH_TOKEN_REALM=f"{berth.auth_url}/token",
        REGISTRY_AUTH_TOKEN_JWKS=f"{berth.auth_url}/.well-known/jwks.json",
    )
    add_users(berth, {"alice": ("alice-password", [])})
    berth.start("auth", "blobstore", "gateway")
    try:
        with berth.auth_client() as auth:
            scope = {"service": "berth", "scope": "repository:alice/app:pull"}
            assert auth.get("/token", params=scope).status_code == 200
            assert auth.get("/token", params=scope, auth=("alice", "alice-password")).status_code == 200
            assert auth.get("/token", params=scope, auth=("alice", "wrong")).status_code == 401
            assert auth.get("/token", params=scope, headers={"Authorization": "Basic !!"}).status_code == 401
            form = {
                "grant_type": "password",
                "service": "berth",
                "client_id": "test",
                "username": "alice",
                "password": "alice-password",
                "access_type": "offline",
                "scope": "repository:alice/app:pull",
            }
            r = auth.post("/token", data=form)
            assert r.status_code == 200, r.text
            refresh = {"grant_type": "refresh_token", "service": "berth", "client_id": "test"}
            assert auth.post("/token", data={**refresh, "refresh_token": r.json()["refresh_token"]}).status_code == 200
            assert auth.post("/token", data={**refresh, "refresh_token": "not-a-token"}).status_code == 401
            pull_token = auth.get("/token", params=scope, auth=("alice", "alice-password")).json()["token"]

        metrics = scrape(berth.auth_url)
        issued = {
            grant: value(metrics, "berth_tokens_issued_total", grant=grant) for grant in ("anonymous", "basic", "password", "refresh_token")
        }
        assert issued == {"anonymous": 1, "basic": 2, "password": 1, "refresh_token": 1}
        denied = {
            reason: value(metrics, "berth_token_denials_total", reason=reason)
            for reason in ("bad_credentials", "malformed_credentials", "invalid_refresh_token")
        }
        assert denied == {"bad_credentials": 1, "malformed_credentials": 1, "invalid_refresh_token": 1}
        assert value(metrics, "berth_http_requests_total", service="auth", method="GET", route="/token", status="401") == 2

        with berth.client() as client:
            assert client.get("/v2/").status_code == 401
            assert client.get("/v2/", headers={"Authorization": "Bearer not.a.token"}).status_code == 401
            push = client.put(
                "/v2/alice/app/manifests/v1",
                content=b"{}",
                headers={"Authorization": f"Bearer {pull_token}", "Content-Type": "application/json"},
            )
            assert push.status_code == 401
        # /metrics is not behind the registry's auth.
        metrics = scrape(berth.url)
        denied = {
            reason: value(metrics, "berth_access_denied_total", reason=reason)
            for reason in ("no_credentials", "invalid_token", "insufficient_scope")
        }
        assert denied == {"no_credentials": 1, "invalid_token": 1, "insufficient_scope": 1}
    finally:
        berth.stop()


def test_metrics_can_be_turned_off(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from services.search.app import create_app

    settings = config.load(environ={"REGISTRY_METRICS_ENABLED": "false", "REGISTRY_SEARCH_DATABASE": "sqlite://"})
    with TestClient(create_app(settings)) as client:
        assert client.get("/metrics").status_code == 404
        # Request ids do not depend on metrics.
        assert client.get("/v1/search", headers={"X-Request-Id": "r-1"}).headers["x-request-id"] == "r-1"
