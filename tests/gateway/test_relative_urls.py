"""``http.relativeurls``: every Location the gateway hands out is a path (with ``http.prefix``),
clients follow it all the same, pagination links stay paths, and notifications keep absolute URLs
(their receivers have no request to resolve a path against)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.images import sha256
from tests.support.processes import Berth
from tests.support.receiver import Receiver
from tests.support.registry import image_manifest

PREFIX = "/registry"


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    instance = Receiver()
    yield instance
    instance.stop()


def test_locations_are_paths_and_events_stay_absolute(tmp_path: Path, receiver: Receiver) -> None:
    berth = Berth(
        tmp_path,
        env={
            "REGISTRY_HTTP_RELATIVEURLS": "true",
            "REGISTRY_HTTP_PREFIX": PREFIX,
            "REGISTRY_NOTIFICATIONS_ENDPOINTS": f"[{{name: hook, url: '{receiver.url}/hook', backoff: 0.1}}]",
        },
    ).start()
    try:
        repo, other = "relative/app", "relative/copy"
        v2 = f"{PREFIX}/v2"
        with httpx.Client(base_url=berth.url, timeout=30) as c:
            # Chunked: POST, PATCH, GET, PUT; each Location followed as the client got it.
            r = c.post(f"{v2}/{repo}/blobs/uploads/")
            assert r.status_code == 202
            location = r.headers["location"]
            assert re.fullmatch(rf"{v2}/{repo}/blobs/uploads/[^/?]+\?_state=[^&]+", location), location
            layer = b"a layer pushed through relative URLs"
            r = c.patch(location, content=layer)
            assert r.status_code == 202
            location = r.headers["location"]
            assert location.startswith(f"{v2}/{repo}/blobs/uploads/")
            r = c.get(location)
            assert r.status_code == 204 and r.headers["location"].startswith(f"{v2}/{repo}/blobs/uploads/")
            r = c.put(f"{location}&digest={sha256(layer)}")
            assert r.status_code == 201 and r.headers["location"] == f"{v2}/{repo}/blobs/{sha256(layer)}"
            assert c.get(r.headers["location"]).content == layer

            # Monolithic, mount, manifest.
            config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
            r = c.post(f"{v2}/{repo}/blobs/uploads/", params={"digest": sha256(config)}, content=config)
            assert r.status_code == 201 and r.headers["location"] == f"{v2}/{repo}/blobs/{sha256(config)}"
            r = c.post(f"{v2}/{other}/blobs/uploads/", params={"mount": sha256(layer), "from": repo})
            assert r.status_code == 201 and r.headers["location"] == f"{v2}/{other}/blobs/{sha256(layer)}"
            payload = json.dumps(image_manifest(config, [layer])).encode()
            for tag in ("v1", "v2"):
                r = c.put(
                    f"{v2}/{repo}/manifests/{tag}", content=payload, headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
                )
                assert r.status_code == 201 and r.headers["location"] == f"{v2}/{repo}/manifests/{sha256(payload)}"

            # Pagination links were paths already, and stay so.
            r = c.get(f"{v2}/{repo}/tags/list", params={"n": 1})
            assert r.headers["link"] == f'<{v2}/{repo}/tags/list?n=1&last=v1>; rel="next"'

        deadline = time.monotonic() + 15
        while len(receiver.events("/hook")) < 5:  # layer, config, mount, two tags
            assert time.monotonic() < deadline, "timed out waiting for events"
            time.sleep(0.05)
        urls = {e["target"]["url"] for e in receiver.events("/hook")}
        assert f"{berth.url}{v2}/{repo}/blobs/{sha256(layer)}" in urls
        assert f"{berth.url}{v2}/{repo}/manifests/{sha256(payload)}" in urls
        assert all(url.startswith(f"{berth.url}{v2}/") for url in urls), urls
    finally:
        berth.stop()
