"""/, /_ping, /v1/_ping and /_ready on the real gateway, token service and search service: open
whatever the auth, at the root whatever the prefix, and /_ready following each one's dependencies
(the blobstore for the gateway, quickly; PostgreSQL for auth and search)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.postgres import PostgresCluster, find_bin_dir
from tests.support.processes import Berth

PING_PATHS = ("/", "/_ping", "/v1/_ping")


def test_gateway_ping_and_readiness_follow_the_blobstore(tmp_path: Path) -> None:
    berth = Berth(tmp_path, env={"REGISTRY_HTTP_PREFIX": "/registry"}).start()
    try:
        with httpx.Client(base_url=berth.url, timeout=30) as c:
            for path in (*PING_PATHS, *(f"/registry{p}" for p in PING_PATHS)):
                r = c.get(path)
                assert r.status_code == 200 and r.json() == {}, path
            assert c.get("/registry/v2/").status_code == 200
            r = c.get("/_ready")
            assert r.status_code == 200 and r.json() == {"ready": True, "checks": {"blobstore": "ok"}}

            berth.stop("blobstore")
            started = time.monotonic()
            r = c.get("/_ready")
            assert time.monotonic() - started < 3  # not blobstore.call_timeout (30 s)
            assert r.status_code == 503
            assert r.json()["failed"] == ["blobstore"] and r.json()["checks"]["blobstore"] != "ok"
            assert c.get("/_ping").status_code == 200  # alive all the same: only readiness changes

            berth.start("blobstore")
            deadline = time.monotonic() + 15
            while c.get("/_ready").status_code != 200:
                assert time.monotonic() < deadline, "the gateway did not become ready again"
                time.sleep(0.2)
    finally:
        berth.stop()


def test_debug_adds_versions_and_host_details(tmp_path: Path) -> None:
    berth = Berth(tmp_path, env={"REGISTRY_DEBUG": "true"}).start()
    try:
        body = httpx.get(f"{berth.url}/_ping", timeout=10).json()
        assert body["service"] == "gateway" and "berth" in body["versions"] and "python" in body["versions"]
        assert body["host"]["pid"] == berth.pid("gateway") and body["host"]["uptime"] >= 0
    finally:
        berth.stop()


def test_health_is_open_when_auth_is_on(tmp_path: Path) -> None:
    (tmp_path / "htpasswd").write_text("")
    berth = Berth(tmp_path, env={"REGISTRY_AUTH_TYPE": "htpasswd", "REGISTRY_AUTH_HTPASSWD_PATH": str(tmp_path / "htpasswd")}).start()
    try:
        with httpx.Client(base_url=berth.url, timeout=30) as c:
            assert c.get("/v2/").status_code == 401
            for path in (*PING_PATHS, "/_ready"):
                r = c.get(path)
                assert r.status_code == 200 and "www-authenticate" not in r.headers, path
    finally:
        berth.stop()


def test_search_is_reported_but_not_critical_for_the_gateway(tmp_path: Path) -> None:
    berth = Berth(tmp_path, env={"REGISTRY_SEARCH_BACKEND": "sqlalchemy"}).start("blobstore", "search", "gateway")
    try:
        assert httpx.get(f"{berth.search_url}/_ready", timeout=10).json() == {"ready": True, "checks": {"database": "ok"}}
        r = httpx.get(f"{berth.url}/_ready", timeout=10)
        assert r.status_code == 200 and r.json()["checks"] == {"blobstore": "ok", "search": "ok"}
        berth.stop("search")
        r = httpx.get(f"{berth.url}/_ready", timeout=10)
        assert r.status_code == 200 and r.json()["ready"] is True and r.json()["checks"]["search"] != "ok"
    finally:
        berth.stop()


@pytest.fixture()
def postgres() -> Iterator[PostgresCluster]:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries not found (install Debian's postgresql package: make tools)")
    cluster = PostgresCluster(bin_dir).start()
    yield cluster
    cluster.stop()


def test_auth_and_search_readiness_follow_their_database(tmp_path: Path, postgres: PostgresCluster) -> None:
    berth = Berth(
        tmp_path,
        env={
            "REGISTRY_TOKEN_SERVICE_DATABASE": postgres.create_database(),
            "REGISTRY_SEARCH_DATABASE": postgres.create_database(),
        },
    ).start("auth", "search")
    try:
        for base in (berth.auth_url, berth.search_url):
            for path in PING_PATHS:
                assert httpx.get(f"{base}{path}", timeout=10).json() == {}, (base, path)
        r = httpx.get(f"{berth.auth_url}/_ready", timeout=10)
        assert r.status_code == 200 and r.json()["checks"] == {"database": "ok", "signing_key": "ok"}
        assert httpx.get(f"{berth.search_url}/_ready", timeout=10).status_code == 200

        postgres.stop()
        for base, also in ((berth.auth_url, {"signing_key": "ok"}), (berth.search_url, {})):
            r = httpx.get(f"{base}/_ready", timeout=10)
            assert r.status_code == 503, (base, r.text)
            body = r.json()
            assert body["failed"] == ["database"] and body["checks"]["database"] != "ok"
            assert {k: v for k, v in body["checks"].items() if k != "database"} == also
            assert httpx.get(f"{base}/_ping", timeout=10).status_code == 200
    finally:
        berth.stop()
