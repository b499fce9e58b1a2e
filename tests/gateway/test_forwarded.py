"""Proxy headers against a real gateway process: believed only from the trusted proxies
(``http.trusted_proxies``: an address and a CIDR network here), shaping Location headers and the
client address events report. Clients pick their loopback source address to play each part."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.processes import ROOT, Berth
from tests.support.receiver import Receiver

PROXY_HEADERS = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "registry.example.com", "X-Forwarded-For": "203.0.113.9"}
UNTRUSTED, TRUSTED, IN_TRUSTED_NETWORK = "127.0.0.1", "127.0.0.2", "127.0.1.5"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    instance = Receiver()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Berth]:
    workdir = tmp_path_factory.mktemp("forwarded")
    config = {
        "http": {"trusted_proxies": [TRUSTED, "127.0.1.0/24"]},
        "notifications": {"endpoints": [{"name": "r", "url": f"{receiver.url}/events", "backoff": 0.1}]},
    }
    (workdir / "config.yml").write_text(yaml.safe_dump(config))
    berth = Berth(workdir, env={"DOCKER_REGISTRY_CONFIG": str(workdir / "config.yml")}).start()
    yield berth
    berth.stop()


def client_from(berth: Berth, source: str) -> httpx.Client:
    return httpx.Client(base_url=berth.url, timeout=30, transport=httpx.HTTPTransport(local_address=source))


def start_upload(berth: Berth, source: str, repository: str, headers: dict[str, str]) -> str:
    with client_from(berth, source) as c:
        r = c.post(f"/v2/{repository}/blobs/uploads/", headers=headers)
        assert r.status_code == 202, r.text
        return str(r.headers["location"])


def pushed_event(berth: Berth, receiver: Receiver, source: str, repository: str, headers: dict[str, str]) -> dict[str, Any]:
    """The event of a blob pushed from ``source`` with ``headers``."""
    data = repository.encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with client_from(berth, source) as c:
        r = c.post(f"/v2/{repository}/blobs/uploads/", params={"digest": digest}, content=data, headers=headers)
        assert r.status_code == 201, r.text
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        found = [e for e in receiver.events() if e["target"]["repository"] == repository]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no event for {repository}")


def test_an_untrusted_peer_cannot_shape_locations(gateway: Berth) -> None:
    location = start_upload(gateway, UNTRUSTED, "fwd/untrusted", PROXY_HEADERS)
    assert location.startswith(f"http://{gateway.host}/v2/fwd/untrusted/blobs/uploads/")


@pytest.mark.parametrize("source", [TRUSTED, IN_TRUSTED_NETWORK])
def test_a_trusted_proxy_shapes_locations(gateway: Berth, source: str) -> None:
    repository = f"fwd/trusted-{source.replace('.', '-')}"
    location = start_upload(gateway, source, repository, PROXY_HEADERS)
    assert location.startswith(f"https://registry.example.com/v2/{repository}/blobs/uploads/")
    # Without headers, the same proxy gets the URL it asked for.
    assert start_upload(gateway, source, repository, {}).startswith(f"http://{gateway.host}/v2/{repository}/")


def test_the_forwarded_header_only_when_configured(gateway: Berth, receiver: Receiver, tmp_path: Path) -> None:
    headers = {"Forwarded": 'for="[2001:db8::7]:4711";proto=https;host=registry.example.com'}
    # This gateway's proxies set X-Forwarded-*: a Forwarded header is the client's own, ignored.
    assert start_upload(gateway, TRUSTED, "fwd/ignored", headers).startswith(f"http://{gateway.host}/v2/fwd/ignored/")
    config = {
        "http": {"trusted_proxies": [TRUSTED], "forwarded_header": "forwarded"},
        "notifications": {"endpoints": [{"name": "r", "url": f"{receiver.url}/events", "backoff": 0.1}]},
    }
    (tmp_path / "config.yml").write_text(yaml.safe_dump(config))
    rfc7239 = Berth(tmp_path, env={"DOCKER_REGISTRY_CONFIG": str(tmp_path / "config.yml")}).start()
    try:
        assert start_upload(rfc7239, TRUSTED, "fwd/rfc7239", headers).startswith("https://registry.example.com/v2/fwd/rfc7239/")
        event = pushed_event(rfc7239, receiver, TRUSTED, "fwd/rfc7239-event", headers)
        assert event["request"]["addr"] == "2001:db8::7"
        assert event["target"]["url"].startswith("https://registry.example.com/v2/fwd/rfc7239-event/blobs/")
    finally:
        rfc7239.stop()


def test_events_report_the_forwarded_client(gateway: Berth, receiver: Receiver) -> None:
    # A client-made entry on the left is not believed: the right-most hop not a trusted proxy is.
    headers = dict(PROXY_HEADERS, **{"X-Forwarded-For": "6.6.6.6, 203.0.113.9, 127.0.1.77"})
    event = pushed_event(gateway, receiver, IN_TRUSTED_NETWORK, "fwd/event-trusted", headers)
    assert event["request"]["addr"] == "203.0.113.9"
    assert event["target"]["url"].startswith("https://registry.example.com/")

    event = pushed_event(gateway, receiver, UNTRUSTED, "fwd/event-untrusted", headers)
    host, _, port = event["request"]["addr"].rpartition(":")
    assert host == UNTRUSTED and port.isdigit()
    assert event["target"]["url"].startswith(f"http://{gateway.host}/")


def test_a_bad_trusted_proxies_entry_stops_the_gateway(tmp_path: Path) -> None:
    (tmp_path / "config.yml").write_text(yaml.safe_dump({"http": {"trusted_proxies": ["10.0.0.0/8", "proxy.internal"]}}))
    berth = Berth(tmp_path, env={"DOCKER_REGISTRY_CONFIG": str(tmp_path / "config.yml")})
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "gateway"],
        check=False,
        cwd=ROOT,
        env=berth.environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "http.trusted_proxies[1]" in result.stderr and "proxy.internal" in result.stderr
