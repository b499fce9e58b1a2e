"""What every endpoint shares: the version check, headers, the error envelope, names, methods,
disabled deletes and proxy headers."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.images import sha256
from tests.support.registry import assert_error, checked_client, push_blob, push_image, raw_request


def test_root_answers(client):
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_version_check(client, method):
    r = client.request(method, "/v2/")
    assert r.status_code == 200
    assert r.headers["docker-distribution-api-version"] == "registry/2.0"


def test_api_version_header_on_errors(client):
    r = client.get(f"/v2/test_protocol/nothing/blobs/{sha256(b'x')}")
    assert r.status_code == 404
    assert r.headers["docker-distribution-api-version"] == "registry/2.0"
    r = client.head("/v2/test_protocol/nothing/manifests/latest")
    assert r.status_code == 404
    assert r.headers["docker-distribution-api-version"] == "registry/2.0"


def test_error_envelope_shape(client):
    r = client.get("/v2/test_protocol/nothing/manifests/latest")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert list(body) == ["errors"]
    [error] = body["errors"]
    assert error["code"] == "NAME_UNKNOWN"
    assert isinstance(error["message"], str) and error["message"]
    assert set(error) <= {"code", "message", "detail"}


def test_head_error_has_no_body(client):
    r = client.head(f"/v2/test_protocol/nothing/blobs/{sha256(b'x')}")
    assert (r.status_code, r.content) == (404, b"")


# Repository names


INVALID_NAMES = {
    "uppercase": "Test_protocol/Upper",
    "empty-component": "a//b",
    "dot-dot": "a/../b",
    "dot": "a/./b",
    "leading-separator": "_a/b",
    "trailing-separator": "a-/b",
    "too-long": "/".join(["a" * 63] * 4) + "b",  # 256 characters
}


@pytest.mark.parametrize("name", list(INVALID_NAMES.values()), ids=list(INVALID_NAMES))
@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("GET", "/tags/list"),
        ("GET", "/manifests/latest"),
        ("PUT", "/manifests/latest"),
        ("GET", f"/blobs/{sha256(b'x')}"),
        ("POST", "/blobs/uploads/"),
        ("GET", f"/referrers/{sha256(b'x')}"),
    ],
)
def test_invalid_name_is_400(berth, name, method, suffix):
    # Sent raw: an HTTP client would fold "." and ".." segments away.
    r = raw_request(berth.http_port, method, f"/v2/{name}{suffix}", {"Content-Length": "0"})
    assert r.status == 400
    assert r.headers["content-type"] == "application/json"
    assert r.headers["docker-distribution-api-version"] == "registry/2.0"
    assert [e["code"] for e in r.json()["errors"]] == ["NAME_INVALID"]


def test_name_of_255_characters_is_valid(client):
    name = "/".join(["a" * 63] * 4)
    assert len(name) == 255
    push_blob(client, name, b"long name")
    assert client.get(f"/v2/{name}/blobs/{sha256(b'long name')}").status_code == 200


def test_percent_encoded_dot_dot_is_invalid(berth):
    r = raw_request(berth.http_port, "GET", "/v2/a/%2e%2e/b/tags/list")
    assert r.status == 400
    assert [e["code"] for e in r.json()["errors"]] == ["NAME_INVALID"]


def test_mount_from_invalid_name_is_400(client):
    r = client.post("/v2/test_protocol/mount/blobs/uploads/", params={"mount": sha256(b"x"), "from": "Bad/Name"})
    assert_error(r, 400, "NAME_INVALID")


# Methods and paths


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/v2/test_protocol/methods/manifests/latest", "GET, HEAD, PUT, DELETE"),
        ("PATCH", "/v2/test_protocol/methods/manifests/latest", "GET, HEAD, PUT, DELETE"),
        ("PUT", "/v2/_catalog", "GET, HEAD"),
        ("DELETE", "/v2/_catalog", "GET, HEAD"),
        ("POST", f"/v2/test_protocol/methods/blobs/{sha256(b'x')}", "GET, HEAD, DELETE"),
        ("PUT", "/v2/test_protocol/methods/tags/list", "GET, HEAD"),
        ("POST", "/v2/", "GET, HEAD"),
    ],
)
def test_method_not_allowed_is_405_unsupported(client, method, path, allow):
    r = client.request(method, path, content=b"")
    assert_error(r, 405, "UNSUPPORTED")
    assert r.headers["allow"] == allow


@pytest.mark.parametrize("path", ["/v2/test_protocol/x/nothing-here", "/v2/_nothing", "/v2/test_protocol/x/blobs/"])
def test_unknown_v2_path_is_404_json(client, path):
    assert_error(client.get(path), 404, "NOT_FOUND")


# Disabled deletes


def test_deletes_disabled_is_405(fresh_berth):
    fresh_berth.env["REGISTRY_STORAGE_DELETE_ENABLED"] = "false"
    fresh_berth.start()
    with checked_client(fresh_berth.url) as client:
        name = "test_protocol/no-deletes"
        digest, payload = push_image(client, name, "v1")
        layer = push_blob(client, name, b"a layer")
        for path in (f"/v2/{name}/blobs/{layer}", f"/v2/{name}/manifests/{digest}", f"/v2/{name}/manifests/v1"):
            r = client.delete(path)
            assert_error(r, 405, "UNSUPPORTED")
            assert "DELETE" not in r.headers["allow"] and "GET" in r.headers["allow"]
        assert client.get(f"/v2/{name}/blobs/{layer}").status_code == 200
        assert client.get(f"/v2/{name}/manifests/v1").content == payload
        # Cancelling an upload is not a delete of content: still allowed.
        r = client.post(f"/v2/{name}/blobs/uploads/")
        assert client.delete(r.headers["location"]).status_code == 204


# Proxies


def test_forwarded_headers_from_trusted_proxy_shape_locations(client):
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "registry.example.com"}
    r = client.post("/v2/test_protocol/proxied/blobs/uploads/", headers=headers)
    assert r.status_code == 202
    location = urlsplit(r.headers["location"])
    assert (location.scheme, location.netloc) == ("https", "registry.example.com")
    assert location.path.startswith("/v2/test_protocol/proxied/blobs/uploads/")

    data = b"proxied"
    r = client.post("/v2/test_protocol/proxied/blobs/uploads/", params={"digest": sha256(data)}, content=data, headers=headers)
    assert r.headers["location"] == f"https://registry.example.com/v2/test_protocol/proxied/blobs/{sha256(data)}"


def test_without_forwarded_headers_locations_use_the_host(berth, client):
    r = client.post("/v2/test_protocol/direct/blobs/uploads/")
    location = urlsplit(r.headers["location"])
    assert (location.scheme, location.netloc) == ("http", berth.host)
    # The Location is usable as is.
    assert client.get(r.headers["location"]).status_code == 204
