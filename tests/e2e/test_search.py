"""Search end to end: images pushed with skopeo are found through the gateway's /v1/search by
name and by their description label within about 2 s; deletes disappear; a search service that
missed events catches up with `berth search reindex`; and the search service follows the
reference Go registry's notifications too."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.images import LayoutWriter
from tests.support.processes import ROOT, Berth, free_port, wait_for_port

pytestmark = pytest.mark.skopeo

if shutil.which("skopeo") is None:  # `make test` installs it; a bare pytest run says what is missing
    pytest.fail("skopeo is not installed (make tools installs it)", pytrace=False)

DESCRIPTION = "org.opencontainers.image.description"
FOUND_WITHIN = 2.0
# blobstore.token, which a search service beyond loopback asks POST /events for.
TOKEN = "search-events-token-0123456789"


def skopeo_copy(src: str, dest: str, *extra: str) -> None:
    result = subprocess.run(
        ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", *extra, src, dest], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr


def labelled_image(path: Path, seed: str, description: str, *, multi_arch: bool = False) -> str:
    """An OCI layout holding one image (or an index of two) whose config carries the description label."""
    writer = LayoutWriter(path)
    labels = {DESCRIPTION: description}
    if multi_arch:
        top = writer.index([writer.image(arch, {"f": f"{seed}-{arch}".encode()}, labels) for arch in ("amd64", "arm64")])
    else:
        top = writer.image("amd64", {"f": seed.encode()}, labels)
    writer.write_index(top)
    return f"oci:{path}:latest"


def search(base: str, q: str) -> list[tuple[str, str]]:
    response = httpx.get(f"{base}/v1/search", params={"q": q}, timeout=10)
    assert response.status_code == 200, response.text
    return [(r["name"], r["description"]) for r in response.json()["results"]]


def wait_for(base: str, q: str, expected: list[tuple[str, str]], within: float = FOUND_WITHIN) -> float:
    """Seconds until the search answers ``expected``; fails after ``within``."""
    start = time.monotonic()
    while True:
        got = search(base, q)
        if got == expected:
            return time.monotonic() - start
        assert time.monotonic() - start < within, f"{q!r}: still {got} after {within} s, expected {expected}"
        time.sleep(0.05)


@pytest.fixture()
def berth(tmp_path: Path) -> Iterator[Berth]:
    instance = Berth(tmp_path, env={"REGISTRY_SEARCH_BACKEND": "sqlalchemy"})
    instance.start("blobstore", "search", "gateway")
    yield instance
    instance.stop()


def test_pushed_images_are_found_by_name_and_description(berth: Berth, tmp_path: Path) -> None:
    skopeo_copy(labelled_image(tmp_path / "a", "a", "Tiny HTTP server for demos"), f"docker://{berth.host}/demo/httpd:v1")
    skopeo_copy(labelled_image(tmp_path / "b", "b", "Caching proxy", multi_arch=True), f"docker://{berth.host}/demo/cache:v1", "--all")
    took = wait_for(berth.url, "http server", [("demo/httpd", "Tiny HTTP server for demos")])
    wait_for(berth.url, "demo/cache", [("demo/cache", "Caching proxy")])
    wait_for(berth.url, "CACHING", [("demo/cache", "Caching proxy")])
    assert search(berth.url, "demo/") == [("demo/cache", "Caching proxy"), ("demo/httpd", "Tiny HTTP server for demos")]
    assert search(berth.url, "nothing like it") == []
    print(f"found by description {took:.2f} s after the push returned")


def test_deleted_images_disappear(berth: Berth, tmp_path: Path) -> None:
    skopeo_copy(labelled_image(tmp_path / "a", "del-a", "To be untagged"), f"docker://{berth.host}/gone/by-tag:v1")
    skopeo_copy(labelled_image(tmp_path / "b", "del-b", "To be deleted"), f"docker://{berth.host}/gone/by-digest:v1")
    wait_for(berth.url, "gone/", [("gone/by-digest", "To be deleted"), ("gone/by-tag", "To be untagged")])
    assert httpx.delete(f"{berth.url}/v2/gone/by-tag/manifests/v1").status_code == 202
    result = subprocess.run(
        ["skopeo", "delete", "--tls-verify=false", f"docker://{berth.host}/gone/by-digest:v1"], capture_output=True, text=True, timeout=60
    )  # skopeo deletes by digest
    assert result.returncode == 0, result.stderr
    wait_for(berth.url, "gone/", [])


def _reindex(berth: Berth) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "search", "reindex", "--registry", berth.url],
        cwd=ROOT,
        env=berth.environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_search_service_that_missed_events_catches_up_with_reindex(berth: Berth, tmp_path: Path) -> None:
    skopeo_copy(labelled_image(tmp_path / "a", "kept", "Was there all along"), f"docker://{berth.host}/missed/kept:v1")
    skopeo_copy(labelled_image(tmp_path / "b", "old", "Deleted while search was down"), f"docker://{berth.host}/missed/old:v1")
    wait_for(berth.url, "missed/", [("missed/kept", "Was there all along"), ("missed/old", "Deleted while search was down")])

    berth.stop("search")
    skopeo_copy(labelled_image(tmp_path / "c", "new", "Pushed while search was down"), f"docker://{berth.host}/missed/new:v1")
    assert httpx.delete(f"{berth.url}/v2/missed/old/manifests/v1").status_code == 202
    response = httpx.get(f"{berth.url}/v1/search", params={"q": "missed"})
    assert response.status_code == 503 and response.json()["errors"][0]["code"] == "UNAVAILABLE"
    berth.stop("gateway")  # its queued events go with it: the search service will never get them
    berth.start("search", "gateway")
    time.sleep(1.0)
    assert search(berth.url, "missed/") == [("missed/kept", "Was there all along"), ("missed/old", "Deleted while search was down")]

    result = _reindex(berth)
    assert result.returncode == 0, result.stderr
    assert "reindex: 3 repositories" in result.stderr and "3 repositories indexed" in result.stderr
    assert search(berth.url, "missed/") == [("missed/kept", "Was there all along"), ("missed/new", "Pushed while search was down")]


@pytest.mark.skipif(shutil.which("docker-registry") is None, reason="Debian's docker-registry (the reference Go registry) is not installed")
@pytest.mark.parametrize("listening", ["loopback", "beyond loopback"])
def test_the_search_service_follows_the_reference_registry(tmp_path: Path, listening: str) -> None:
    """Beyond loopback the search service asks for the token, and registry:2 sends it the way
    services/search/README.md says: a headers entry on its notification endpoint."""
    search_port, registry_port = free_port(), free_port()
    env = {"REGISTRY_SEARCH_BACKEND": "sqlalchemy"}
    endpoint: dict[str, Any] = {
        "name": "berth-search",
        "url": f"http://127.0.0.1:{search_port}/events",
        "timeout": "2s",
        "threshold": 5,
        "backoff": "1s",
    }
    if listening == "beyond loopback":
        env.update(REGISTRY_SEARCH_ADDR=f"0.0.0.0:{search_port}", REGISTRY_BLOBSTORE_TOKEN=TOKEN)
        endpoint["headers"] = {"Authorization": [f"Bearer {TOKEN}"]}
    berth = Berth(tmp_path / "berth", env=env, search_port=search_port)
    berth.workdir.mkdir()
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(tmp_path / "registry2")}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{registry_port}"},
        "notifications": {"endpoints": [endpoint]},
    }
    (tmp_path / "registry2.yml").write_text(yaml.safe_dump(config))
    with open(tmp_path / "registry2.log", "wb") as log:
        registry = subprocess.Popen(["docker-registry", "serve", str(tmp_path / "registry2.yml")], stdout=log, stderr=subprocess.STDOUT)
    try:
        berth.start("search")
        wait_for_port(registry_port, registry)
        base = f"http://127.0.0.1:{search_port}"
        skopeo_copy(labelled_image(tmp_path / "img", "go", "Pushed to registry:2"), f"docker://127.0.0.1:{registry_port}/ref/image:v1")
        wait_for(base, "registry:2", [("ref/image", "Pushed to registry:2")], within=5.0)
        result = subprocess.run(
            ["skopeo", "delete", "--tls-verify=false", f"docker://127.0.0.1:{registry_port}/ref/image:v1"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        wait_for(base, "ref/", [], within=5.0)
        if listening == "beyond loopback":
            assert httpx.post(f"{base}/events", json={"events": []}).status_code == 401
    finally:
        registry.terminate()
        registry.wait(timeout=15)
        berth.stop()


def test_beyond_loopback_the_gateway_sends_the_token_and_nobody_else_gets_in(tmp_path: Path) -> None:
    """A search service listening beyond loopback takes events from the gateway (which presents
    blobstore.token) and refuses everyone else with 401 in the error envelope."""
    berth = Berth(tmp_path, env={"REGISTRY_SEARCH_BACKEND": "sqlalchemy", "REGISTRY_BLOBSTORE_TOKEN": TOKEN})
    berth.env["REGISTRY_SEARCH_ADDR"] = f"0.0.0.0:{berth.search_port}"
    berth.start("blobstore", "search", "gateway")
    try:
        forged = {
            "events": [
                {
                    "id": "forged",
                    "action": "push",
                    "target": {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "repository": "forged/repo",
                        "tag": "v1",
                        "digest": "sha256:" + "0" * 64,
                    },
                }
            ]
        }
        for headers in ({}, {"Authorization": "Bearer not-the-token-at-all"}, {"Authorization": f"Basic {TOKEN}"}):
            r = httpx.post(f"{berth.search_url}/events", json=forged, headers=headers)
            assert r.status_code == 401, r.text
            assert r.json()["errors"][0]["code"] == "UNAUTHORIZED" and "www-authenticate" in r.headers
        skopeo_copy(labelled_image(tmp_path / "a", "guarded", "Delivered with the token"), f"docker://{berth.host}/guarded/app:v1")
        wait_for(berth.url, "guarded/", [("guarded/app", "Delivered with the token")])
        assert search(berth.url, "forged") == []
        assert "refused POST /events" in berth.log("search")
    finally:
        berth.stop()


@pytest.mark.parametrize("service", ["search", "gateway"])
def test_beyond_loopback_without_a_token_nothing_starts(tmp_path: Path, service: str) -> None:
    berth = Berth(tmp_path, env={"REGISTRY_SEARCH_BACKEND": "sqlalchemy"})
    berth.env["REGISTRY_SEARCH_ADDR"] = f"0.0.0.0:{berth.search_port}"
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", service],
        cwd=ROOT,
        env=berth.environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "configuration error: blobstore.token:" in result.stderr and f"0.0.0.0:{berth.search_port}" in result.stderr
