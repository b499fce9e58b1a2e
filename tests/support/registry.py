"""A few calls of the registry API that tests repeat; each asserts the spec's success status."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any

import httpx

from tests.images import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, sha256

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"


def check_api_version(response: httpx.Response) -> None:
    """An httpx response hook: every /v2 response must carry Docker-Distribution-API-Version."""
    if response.request.url.path.startswith("/v2"):
        assert response.headers.get("docker-distribution-api-version") == "registry/2.0", (
            f"{response.request.method} {response.request.url.path} -> {response.status_code} lacks Docker-Distribution-API-Version"
        )


def checked_client(base_url: str) -> httpx.Client:
    """A client that fails the test on any /v2 response without the API version header."""
    return httpx.Client(base_url=base_url, timeout=60, event_hooks={"response": [check_api_version]})


def push_blob(client: httpx.Client, name: str, data: bytes) -> str:
    digest = sha256(data)
    r = client.post(f"/v2/{name}/blobs/uploads/", params={"digest": digest}, content=data)
    assert r.status_code == 201, r.text
    return digest


def start_upload(client: httpx.Client, name: str) -> str:
    r = client.post(f"/v2/{name}/blobs/uploads/")
    assert r.status_code == 202, r.text
    return r.headers["location"]


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data), **extra}


def image_manifest(config: bytes, layers: list[bytes], **extra: Any) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": [descriptor(OCI_LAYER, layer) for layer in layers],
        **extra,
    }


def put_manifest(client: httpx.Client, name: str, reference: str, payload: bytes, media_type: str = OCI_MANIFEST) -> httpx.Response:
    return client.put(f"/v2/{name}/manifests/{reference}", content=payload, headers={"Content-Type": media_type})


def push_manifest(
    client: httpx.Client, name: str, reference: str, manifest: dict[str, Any] | bytes, media_type: str | None = None
) -> tuple[str, bytes]:
    """PUTs a manifest (a dict is serialised; its mediaType is the Content-Type); returns digest and bytes."""
    payload = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    if media_type is None:
        media_type = manifest["mediaType"] if isinstance(manifest, dict) else OCI_MANIFEST
    r = put_manifest(client, name, reference, payload, media_type)
    assert r.status_code == 201, r.text
    assert r.headers["docker-content-digest"] == sha256(payload)
    return r.headers["docker-content-digest"], payload


def push_image(client: httpx.Client, name: str, tag: str, *, layers: list[bytes] | None = None, **extra: Any) -> tuple[str, bytes]:
    """Pushes config, layers and manifest; returns the manifest's digest and bytes."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode()
    layers = layers if layers is not None else [f"layer of {name}:{tag}".encode()]
    for blob in (config, *layers):
        push_blob(client, name, blob)
    return push_manifest(client, name, tag, image_manifest(config, layers, **extra))


def error_codes(response: httpx.Response) -> list[str]:
    return [e["code"] for e in response.json()["errors"]]


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is the spec's JSON error envelope with ``code``; returns that error."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].split(";")[0] == "application/json"
    errors = response.json()["errors"]
    assert isinstance(errors, list) and errors
    for error in errors:
        assert isinstance(error["code"], str) and isinstance(error["message"], str)
    matching = [e for e in errors if e["code"] == code]
    assert matching, f"expected {code}, got {[e['code'] for e in errors]}"
    return matching[0]


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(port: int, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"") -> RawResponse:
    """One request sent as written: the path is not normalised and header values are not checked
    (httpx refuses a negative Content-Length and folds ``..`` segments)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        conn.endheaders(body or None)
        response = conn.getresponse()
        return RawResponse(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()
