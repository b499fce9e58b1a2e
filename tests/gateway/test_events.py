"""Registry events reach webhooks in the reference registry's format, and a webhook that is down
neither slows pushes nor loses events within its queue bound.

The first test runs the gateway as a process (the real server, configured by file); the others
run it in this process over a real blobstore, so they can read the per-endpoint counters the
gateway keeps for /metrics.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from starlette.testclient import TestClient

from services.common.config import Settings
from services.gateway.app import create_app
from services.gateway.events.stats import EndpointStats
from tests.images import OCI_MANIFEST, sha256
from tests.support.processes import Berth
from tests.support.receiver import Receiver
from tests.support.registry import image_manifest, push_blob, push_manifest

EVENTS_TYPE = "application/vnd.docker.distribution.events.v1+json"
BLOB_TYPE = "application/octet-stream"
AGENT = "berth-events-test/1.0"
SHA256 = re.compile(r"^sha256:[0-9a-f]{64}$")


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    instance = Receiver()
    yield instance
    instance.stop()


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_each_action_emits_its_event_with_the_reference_fields(tmp_path: Path, receiver: Receiver) -> None:
    config = {
        "notifications": {
            "endpoints": [
                {"name": "all", "url": f"{receiver.url}/all", "headers": {"Authorization": ["Bearer s3cret"]}, "backoff": 0.1},
                {
                    "name": "filtered",
                    "url": f"{receiver.url}/filtered",
                    "backoff": 0.1,
                    "ignore": {"actions": ["pull"], "mediatypes": [BLOB_TYPE]},
                },
                {"name": "off", "url": f"{receiver.url}/off", "disabled": True},
            ]
        }
    }
    (tmp_path / "config.yml").write_text(yaml.safe_dump(config))
    berth = Berth(tmp_path, env={"DOCKER_REGISTRY_CONFIG": str(tmp_path / "config.yml")}).start()
    try:
        base = berth.url
        repo, other = "events/app", "events/copy"
        with httpx.Client(base_url=base, timeout=30, headers={"User-Agent": AGENT}) as c:
            config_blob = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
            layer_one, layer_two = b"chunked layer", b"put-with-body layer"
            cfg = push_blob(c, repo, config_blob)  # monolithic POST ?digest=
            location = c.post(f"/v2/{repo}/blobs/uploads/").headers["location"]  # chunked: POST, PATCH, PUT
            location = c.patch(location, content=layer_one, headers={"Content-Range": f"0-{len(layer_one) - 1}"}).headers["location"]
            one = sha256(layer_one)
            assert c.put(f"{location}&digest={one}").status_code == 201
            location = c.post(f"/v2/{repo}/blobs/uploads/").headers["location"]  # POST, then PUT with the bytes
            two = sha256(layer_two)
            assert c.put(f"{location}&digest={two}", content=layer_two).status_code == 201
            manifest, payload = push_manifest(c, repo, "v1", image_manifest(config_blob, [layer_one, layer_two]))
            assert c.get(f"/v2/{repo}/manifests/v1").status_code == 200
            assert c.head(f"/v2/{repo}/manifests/v1").status_code == 200  # no event
            assert c.get(f"/v2/{repo}/manifests/{manifest}").status_code == 200
            assert c.get(f"/v2/{repo}/manifests/missing").status_code == 404  # no event
            assert c.post(f"/v2/{other}/blobs/uploads/", params={"mount": one, "from": repo}).status_code == 201
            assert c.delete(f"/v2/{other}/blobs/{one}").status_code == 202
            assert c.delete(f"/v2/{repo}/manifests/v1").status_code == 202
            assert c.delete(f"/v2/{repo}/manifests/{manifest}").status_code == 202

        wait_until(lambda: len(receiver.events("/all")) >= 10 and len(receiver.events("/filtered")) >= 4, 15, "events")
        time.sleep(0.3)  # nothing more may come
        events = receiver.events("/all")

        def blob(repository: str, digest: str, data: bytes, **extra: str) -> dict[str, Any]:
            url = f"{base}/v2/{repository}/blobs/{digest}"
            return {
                "mediaType": BLOB_TYPE,
                "digest": digest,
                "size": len(data),
                "length": len(data),
                "repository": repository,
                "url": url,
                **extra,
            }

        image = {
            "mediaType": OCI_MANIFEST,
            "digest": manifest,
            "size": len(payload),
            "length": len(payload),
            "repository": repo,
            "url": f"{base}/v2/{repo}/manifests/{manifest}",
        }
        expected = [
            ("push", "POST", blob(repo, cfg, config_blob)),
            ("push", "PUT", blob(repo, one, layer_one)),
            ("push", "PUT", blob(repo, two, layer_two)),
            ("push", "PUT", dict(image, tag="v1")),
            ("pull", "GET", dict(image, tag="v1")),
            ("pull", "GET", image),
            ("mount", "POST", blob(other, one, layer_one, fromRepository=repo)),
            ("delete", "DELETE", {"digest": one, "repository": other}),
            ("delete", "DELETE", {"repository": repo, "tag": "v1"}),
            ("delete", "DELETE", {"digest": manifest, "repository": repo}),
        ]
        assert [(e["action"], e["request"]["method"], e["target"]) for e in events] == expected

        instance = events[0]["source"]["instanceID"]
        stamps = [datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")) for e in events]
        assert stamps == sorted(stamps) and all(s.tzinfo is not None for s in stamps)
        assert len({e["id"] for e in events}) == len(events) and len({e["request"]["id"] for e in events}) == len(events)
        for e in events:
            uuid.UUID(e["id"])
            assert set(e) == {"id", "timestamp", "action", "target", "request", "actor", "source"}
            assert e["request"]["useragent"] == AGENT and e["request"]["host"] == berth.host
            assert re.match(r"^127\.0\.0\.1:\d+$", e["request"]["addr"])
            assert e["actor"] == {}  # anonymous (auth none)
            assert e["source"]["addr"].endswith(f":{berth.http_port}") and e["source"]["instanceID"] == instance
        delivery = next(d for d in receiver.deliveries if d.path == "/all")
        assert delivery.headers["content-type"] == EVENTS_TYPE and delivery.headers["authorization"] == "Bearer s3cret"

        # Ignore rules: no pulls, no blobs (mounts included); deletes carry no media type and pass.
        filtered = [(e["action"], e["target"].get("tag") or e["target"].get("digest")) for e in receiver.events("/filtered")]
        assert filtered == [("push", "v1"), ("delete", one), ("delete", "v1"), ("delete", manifest)]
        assert receiver.events("/off") == []
        assert "s3cret" not in berth.log("gateway")
    finally:
        berth.stop()


# In-process gateway over a real blobstore


@pytest.fixture()
def blobstore(tmp_path: Path) -> Iterator[Berth]:
    instance = Berth(tmp_path).start("blobstore")
    yield instance
    instance.stop()


def gateway(blobstore: Berth, endpoints: list[dict[str, Any]]) -> TestClient:
    settings = Settings.model_validate(
        {
            "blobstore": {"addr": f"127.0.0.1:{blobstore.grpc_port}"},
            "http": {"secret": "test"},
            "search_backend": "",
            "notifications": {"endpoints": endpoints},
        }
    )
    return TestClient(create_app(settings), base_url="http://registry.test")


def push_images(client: TestClient, prefix: str, count: int) -> tuple[float, list[tuple[str, str, str]]]:
    """Pushes ``count`` one-layer images; returns the seconds it took and the events expected, in order."""
    expected: list[tuple[str, str, str]] = []
    start = time.perf_counter()
    for i in range(count):
        repo = f"{prefix}/image-{i}"
        config = json.dumps({"architecture": "amd64", "os": "linux", "n": i}).encode()
        layer = f"layer {prefix} {i}".encode()
        for blob in (config, layer):
            expected.append(("push", repo, push_blob(client, repo, blob)))  # type: ignore[arg-type]
        digest, _ = push_manifest(client, repo, "v1", image_manifest(config, [layer]))  # type: ignore[arg-type]
        expected.append(("push", repo, digest))
    return time.perf_counter() - start, expected


def seen(events: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(e["action"], e["target"]["repository"], e["target"]["digest"]) for e in events]


def stats_of(client: TestClient) -> dict[str, EndpointStats]:
    return client.app.state.gateway.events.stats()  # type: ignore[attr-defined,no-any-return]


def test_a_push_by_digest_with_tags_is_one_push_per_tag_under_the_pushed_digest(blobstore: Berth, receiver: Receiver) -> None:
    """As if each tag had been pushed on its own, but with the digest the client chose (sha512),
    which the pull by tag reports too."""
    repo = "events/tagged"
    with gateway(blobstore, [{"name": "all", "url": f"{receiver.url}/all", "backoff": 0.05}]) as client:
        config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
        layer = b"tagged layer"
        for blob in (config, layer):
            push_blob(client, repo, blob)  # type: ignore[arg-type]
        payload = json.dumps(image_manifest(config, [layer])).encode()
        digest = "sha512:" + hashlib.sha512(payload).hexdigest()
        r = client.put(
            f"/v2/{repo}/manifests/{digest}", params=[("tag", "a"), ("tag", "b")], content=payload, headers={"Content-Type": OCI_MANIFEST}
        )
        assert r.status_code == 201, r.text
        assert client.get(f"/v2/{repo}/manifests/a").status_code == 200
        wait_until(lambda: len(receiver.events("/all")) >= 5, 15, "events")
    url = f"http://registry.test/v2/{repo}/manifests/{digest}"
    manifests = [
        (e["action"], e["target"].get("tag"), e["target"]["digest"], e["target"]["url"])
        for e in receiver.events("/all")
        if e["target"].get("mediaType") == OCI_MANIFEST
    ]
    assert manifests == [("push", "a", digest, url), ("push", "b", digest, url), ("pull", "a", digest, url)]


def test_a_down_endpoint_delays_no_push_and_loses_nothing_within_its_queue(blobstore: Berth, receiver: Receiver) -> None:
    images = 200
    with gateway(blobstore, []) as plain:
        baseline, _ = push_images(plain, "baseline", images)

    receiver.set_mode("hang")  # accepts connections, never answers: each attempt costs the timeout
    endpoints = [
        {"name": "roomy", "url": f"{receiver.url}/roomy", "timeout": 0.5, "threshold": 2, "backoff": 0.05, "queue_size": 1000},
        {"name": "tight", "url": f"{receiver.url}/tight", "timeout": 0.5, "threshold": 2, "backoff": 0.05, "queue_size": 100},
    ]
    with gateway(blobstore, endpoints) as client:
        with_dead, expected = push_images(client, "dead", images)
        assert len(expected) == 3 * images
        stats = stats_of(client)
        assert stats["roomy"].pending == len(expected) and stats["roomy"].delivered == 0
        assert stats["roomy"].failed_attempts >= 1 and stats["roomy"].down
        assert stats["tight"].dropped > 0 and stats["tight"].pending <= 100 + 50

        receiver.set_mode("up")
        wait_until(lambda: stats["roomy"].pending == 0 and stats["tight"].pending == 0, 90, "delivery after recovery")
        roomy, tight = seen(receiver.events("/roomy")), seen(receiver.events("/tight"))
        assert roomy == expected  # every event, once, in order
        assert (stats["roomy"].delivered, stats["roomy"].dropped, stats["roomy"].down) == (len(expected), 0, False)
        # Beyond the bound the oldest went, and the count says how many.
        assert stats["tight"].dropped == len(expected) - len(tight) > 0
        assert stats["tight"].delivered == len(tight)
        assert tight[-100:] == expected[-100:] and tight == [e for e in expected if e in set(tight)]
    print(f"pushing {images} images: {baseline:.2f} s without endpoints, {with_dead:.2f} s with two that hang")
    # Pushing with a dead endpoint costs what pushing without one does (a blocking send would add
    # half a second per event).
    assert with_dead < baseline * 1.5 + 1.0, (baseline, with_dead)


def test_a_failing_endpoint_is_retried_until_it_answers(blobstore: Berth, receiver: Receiver) -> None:
    receiver.set_mode("fail")
    endpoints = [{"name": "flaky", "url": f"{receiver.url}/flaky", "threshold": 1, "backoff": 0.05}]
    with gateway(blobstore, endpoints) as client:
        _, expected = push_images(client, "flaky", 3)
        stats = stats_of(client)["flaky"]
        wait_until(lambda: stats.failed_attempts >= 3, 10, "retries")
        assert receiver.events("/flaky") == [] and stats.pending == len(expected)
        receiver.set_mode("up")
        wait_until(lambda: stats.pending == 0, 20, "delivery")
        assert seen(receiver.events("/flaky")) == expected and stats.delivered == len(expected)


def test_events_still_queued_at_shutdown_are_counted_and_shutdown_is_bounded(blobstore: Berth, receiver: Receiver) -> None:
    receiver.set_mode("hang")
    endpoints = [{"name": "stuck", "url": f"{receiver.url}/stuck", "timeout": 30, "backoff": 0.05}]
    client = gateway(blobstore, endpoints).__enter__()
    _, expected = push_images(client, "stuck", 2)
    stats = stats_of(client)["stuck"]
    start = time.monotonic()
    client.__exit__(None, None, None)
    assert time.monotonic() - start < 8  # the 5 s grace, not the 30 s delivery timeout
    assert stats.abandoned == len(expected) and stats.delivered == 0
