"""The shared health endpoints (services/common/health.py) on a bare app: liveness bodies with and
without debug, readiness verdicts, timeouts, shared runs and the path prefix."""

from __future__ import annotations

import asyncio
import os
import platform
import sys

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from services.common import health


def app_with(*checks: health.Check, debug: bool = False, prefix: str = "") -> TestClient:
    app = FastAPI()
    health.install(app, "test", debug=debug, checks=checks, prefix=prefix)
    return TestClient(app)


async def ok() -> None:
    return None


async def broken() -> None:
    raise ConnectionRefusedError("10.1.2.3:5432 refused")


@pytest.mark.parametrize("path", ["/", "/_ping", "/v1/_ping"])
def test_ping_says_nothing_without_debug(path: str) -> None:
    r = app_with().get(path)
    assert r.status_code == 200 and r.json() == {}
    assert r.headers["cache-control"] == "no-store"


def test_ping_with_debug_has_versions_and_host() -> None:
    body = app_with(debug=True).get("/v1/_ping").json()
    assert body["service"] == "test"
    assert body["versions"]["python"] == platform.python_version() == sys.version.split()[0]
    assert {"berth", "fastapi", "uvicorn", "grpcio"} <= set(body["versions"])
    assert body["host"]["pid"] == os.getpid() and body["host"]["hostname"] and body["host"]["platform"]
    assert body["host"]["uptime"] >= 0 and body["host"]["started"].endswith("Z")


def test_ping_says_the_services_facts_with_or_without_debug() -> None:
    app = FastAPI()
    health.install(app, "test", debug=False, facts={"readonly": True}, prefix="/registry")
    client = TestClient(app)
    for path in ("/", "/_ping", "/v1/_ping", "/registry/_ping"):
        assert client.get(path).json() == {"readonly": True}
    app = FastAPI()
    health.install(app, "test", debug=True, facts={"readonly": True})
    body = TestClient(app).get("/_ping").json()
    assert body["readonly"] is True and body["service"] == "test"


def test_ready_when_every_critical_check_passes() -> None:
    client = app_with(health.Check("db", ok), health.Check("extra", broken, critical=False))
    r = client.get("/_ready")
    assert r.status_code == 200
    assert r.json() == {"ready": True, "checks": {"db": "ok", "extra": "failed: ConnectionRefusedError"}}
    assert client.head("/_ready").status_code == 200


def test_not_ready_names_the_failing_check_without_its_details() -> None:
    async def says_why() -> None:
        raise health.CheckFailed("NOT_SERVING")

    r = app_with(health.Check("db", broken), health.Check("store", says_why), health.Check("fine", ok)).get("/_ready")
    assert r.status_code == 503
    body = r.json()
    assert body["ready"] is False and body["failed"] == ["db", "store"]
    assert body["checks"] == {"db": "failed: ConnectionRefusedError", "store": "failed: NOT_SERVING", "fine": "ok"}
    assert "10.1.2.3" not in r.text  # addresses go to the log only


def test_a_hung_check_times_out_and_probes_share_its_run() -> None:
    started = 0

    async def hangs() -> None:
        nonlocal started
        started += 1
        await asyncio.sleep(30)

    client = app_with(health.Check("slow", hangs, timeout=0.2))
    with client:  # one event loop for both probes, as in a server
        for _ in range(2):
            r = client.get("/_ready")
            assert r.status_code == 503 and r.json()["checks"]["slow"] == "timed out after 0.2s"
    assert started == 1


def test_served_at_the_root_and_under_the_prefix() -> None:
    client = app_with(health.Check("db", ok), prefix="/registry")
    for path in ("/", "/_ping", "/v1/_ping", "/_ready", "/registry/", "/registry/_ping", "/registry/v1/_ping", "/registry/_ready"):
        assert client.get(path).status_code == 200, path
