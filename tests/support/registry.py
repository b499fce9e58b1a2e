"""A few calls of the registry API that tests repeat; each asserts the spec's success status."""
from __future__ import annotations

import json
from typing import Any

import httpx

from tests.images import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, sha256


def push_blob(client: httpx.Client, name: str, data: bytes) -> str:
    digest = sha256(data)
    r = client.post(f"/v2/{name}/blobs/uploads/", params={"digest": digest}, content=data)
    assert r.status_code == 201, r.text
    return digest


def start_upload(client: httpx.Client, name: str) -> str:
    r = client.post(f"/v2/{name}/blobs/uploads/")
    assert r.status_code == 202, r.text
    return r.headers["location"]


def image_manifest(config: bytes, layers: list[bytes], **extra: Any) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": sha256(l), "size": len(l)} for l in layers],
        **extra,
    }


def push_image(client: httpx.Client, name: str, tag: str, *, layers: list[bytes] | None = None, **extra: Any) -> tuple[str, bytes]:
    """Pushes config, layers and manifest; returns the manifest's digest and bytes."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode()
    layers = layers if layers is not None else [f"layer of {name}:{tag}".encode()]
    for blob in (config, *layers):
        push_blob(client, name, blob)
    payload = json.dumps(image_manifest(config, layers, **extra)).encode()
    r = client.put(f"/v2/{name}/manifests/{tag}", content=payload, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text
    return r.headers["docker-content-digest"], payload


def error_codes(response: httpx.Response) -> list[str]:
    return [e["code"] for e in response.json()["errors"]]
