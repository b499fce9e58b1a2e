"""``storage.maintenance.readonly.enabled``: every write answers 405 UNSUPPORTED before any work is
done (no upload session, nothing stored), every read keeps working, and /_ping and /metrics say so.

The content is pushed by the same registry before it restarts in read-only mode.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.images import sha256
from tests.support.processes import Berth
from tests.support.registry import assert_error, checked_client, image_manifest, push_image, start_upload

REPO = "readonly/app"


def stored(berth: Berth) -> set[Path]:
    """Every file and directory under the repositories (upload sessions included)."""
    return set((berth.data_dir / "docker" / "registry" / "v2" / "repositories").rglob("*"))


def readonly_gauge(c: httpx.Client) -> str:
    return next(line for line in c.get("/metrics").text.splitlines() if line.startswith("berth_readonly{"))


def test_writes_are_refused_and_reads_go_on(fresh_berth: Berth) -> None:
    fresh_berth.start()
    with checked_client(fresh_berth.url) as c:
        digest, _ = push_image(c, REPO, "v1")
        upload = start_upload(c, REPO)  # begun before, to be carried on during, the read-only time
        assert c.get("/_ping").json() == {}
        assert readonly_gauge(c) == 'berth_readonly{service="gateway"} 0.0'

    fresh_berth.stop()
    fresh_berth.env["REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED"] = "true"
    fresh_berth.start()
    before = stored(fresh_berth)
    layer = b"a layer that must not be stored"
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    manifest = json.dumps(image_manifest(config, [layer])).encode()
    writes = [
        ("POST", f"/v2/{REPO}/blobs/uploads/", {}, b"", ""),
        ("POST", f"/v2/{REPO}/blobs/uploads/?digest={sha256(layer)}", {}, layer, ""),
        ("POST", f"/v2/readonly/other/blobs/uploads/?mount={sha256(config)}&from={REPO}", {}, b"", ""),
        ("PATCH", upload, {}, layer, "GET"),
        ("PUT", f"{upload}&digest={sha256(layer)}", {}, layer, "GET"),
        ("DELETE", upload, {}, b"", "GET"),
        ("PUT", f"/v2/{REPO}/manifests/v2", {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}, manifest, "GET, HEAD"),
        ("DELETE", f"/v2/{REPO}/manifests/v1", {}, b"", "GET, HEAD"),
        ("DELETE", f"/v2/{REPO}/manifests/{digest}", {}, b"", "GET, HEAD"),
        ("DELETE", f"/v2/{REPO}/blobs/{sha256(config)}", {}, b"", "GET, HEAD"),
    ]
    with checked_client(fresh_berth.url) as c:
        for method, path, headers, body, allow in writes:
            r = c.request(method, path, headers=headers, content=body)
            error = assert_error(r, 405, "UNSUPPORTED")
            assert error == {
                "code": "UNSUPPORTED",
                "message": "the registry is in read-only mode",
                "detail": {"reason": "storage.maintenance.readonly.enabled"},
            }, (method, path)
            # What the path still serves: its reads (none at all where uploads start).
            assert r.headers["allow"] == allow, (method, path)
        assert stored(fresh_berth) == before

        # Pulls, listings, referrers, search and the upload's status.
        assert c.get(f"/v2/{REPO}/manifests/v1").status_code == 200
        assert c.head(f"/v2/{REPO}/manifests/{digest}").status_code == 200
        assert c.get(f"/v2/{REPO}/blobs/{sha256(config)}").status_code == 404  # never pushed
        layer_digest = json.loads(c.get(f"/v2/{REPO}/manifests/v1").content)["layers"][0]["digest"]
        assert c.get(f"/v2/{REPO}/blobs/{layer_digest}").status_code == 200
        assert c.head(f"/v2/{REPO}/blobs/{layer_digest}").status_code == 200
        assert c.get(f"/v2/{REPO}/tags/list").json()["tags"] == ["v1"]
        assert REPO in c.get("/v2/_catalog").json()["repositories"]
        assert c.get(f"/v2/{REPO}/referrers/{digest}").status_code == 200
        assert c.get("/v1/search", params={"q": "app"}).status_code == 200
        assert c.get(upload).status_code == 204
        assert c.get("/v2/").status_code == 200

        for path in ("/", "/_ping", "/v1/_ping"):
            assert c.get(path).json() == {"readonly": True}
        assert readonly_gauge(c) == 'berth_readonly{service="gateway"} 1.0'
