"""``http.headers``: the configured headers on every response of the gateway (registry API, errors,
health, metrics, streamed blobs, unhandled errors), a header the route set itself left as it is,
and names or values that would break every response refused at start."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from starlette.testclient import TestClient

from services.common.config import ConfigError, Settings
from services.gateway.app import create_app
from tests.support.processes import Berth
from tests.support.registry import assert_error, checked_client, push_blob

HEADERS = "{X-Content-Type-Options: [nosniff], X-Frame-Options: DENY, Cache-Control: [no-cache], X-Multi: [one, two]}"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Berth]:
    instance = Berth(tmp_path_factory.mktemp("berth-headers"), env={"REGISTRY_HTTP_HEADERS": HEADERS})
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture()
def client(registry: Berth) -> Iterator[httpx.Client]:
    with checked_client(registry.url) as c:
        yield c


def assert_configured(r: httpx.Response, cache_control: str = "no-cache") -> None:
    assert r.headers.get_list("x-content-type-options") == ["nosniff"], (r.request.url, r.headers)
    assert r.headers.get_list("x-frame-options") == ["DENY"]
    assert r.headers.get_list("x-multi") == ["one", "two"]
    assert r.headers.get_list("cache-control") == [cache_control]


def test_every_kind_of_response_carries_them(client: httpx.Client) -> None:
    assert_configured(client.get("/v2/"))
    assert_configured(client.get("/metrics"))
    assert_configured(client.get("/_ready"), cache_control="no-store")  # the route's own wins

    r = client.get("/v2/headers/missing/manifests/v1")
    assert_error(r, 404, "NAME_UNKNOWN")
    assert_configured(r)
    r = client.get("/nowhere")
    assert_error(r, 404, "NOT_FOUND")
    assert_configured(r)
    r = client.post("/v2/headers/app/manifests/v1")
    assert_error(r, 405, "UNSUPPORTED")
    assert_configured(r)
    r = client.get("/v2/Bad%22Name/tags/list")
    assert_error(r, 400, "NAME_INVALID")
    assert_configured(r)


@pytest.mark.parametrize("path", ["/", "/_ping", "/v1/_ping"])
def test_health_probes_carry_them_and_keep_their_own_cache_control(client: httpx.Client, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 200 and r.json() == {}
    assert_configured(r, cache_control="no-store")


def test_streamed_blobs_pass_through_whole(client: httpx.Client) -> None:
    data = b"header test layer " * 50_000
    digest = push_blob(client, "headers/app", data)
    r = client.get(f"/v2/headers/app/blobs/{digest}")
    assert r.status_code == 200 and r.content == data
    assert_configured(r, cache_control="max-age=31536000")
    r = client.head(f"/v2/headers/app/blobs/{digest}")
    assert r.status_code == 200 and r.headers["content-length"] == str(len(data))
    assert_configured(r, cache_control="max-age=31536000")


def test_an_unhandled_error_carries_them_too() -> None:
    settings = Settings.model_validate({"http": {"headers": {"X-Content-Type-Options": ["nosniff"]}}, "search_backend": ""})
    # Not entered: without its lifespan the app has no blobstore client, so a route that needs one
    # fails with an error no handler expects (the 500 comes from Starlette's outermost error layer).
    client = TestClient(create_app(settings), raise_server_exceptions=False)
    r = client.get("/v2/headers/app/tags/list")
    assert r.status_code == 500
    assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "headers",
    [
        {"Bad Name": ["x"]},
        {"X-Injected": ["ok\r\nSet-Cookie: a=b"]},
        {"X-Wide": ["\u2603"]},
    ],
)
def test_headers_that_would_break_every_response_stop_the_start(headers: dict[str, list[str]]) -> None:
    name = next(iter(headers))
    with pytest.raises(ConfigError, match=f"http.headers.*{name}"):
        create_app(Settings.model_validate({"http": {"headers": headers}}))
