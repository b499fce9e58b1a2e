"""The search service's POST /events and GET /v1/search, with a stand-in registry on loopback to
read manifests and configs from."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from services.common.config import Settings
from services.search.app import create_app
from services.search.events import RecentIds
from services.search.index import Index
from tests.support.fake_registry import OCI_INDEX, OCI_MANIFEST, FakeRegistry

EVENTS_TYPE = "application/vnd.docker.distribution.events.v1+json"
DESCRIPTION = "org.opencontainers.image.description"
TITLE = "org.opencontainers.image.title"


@pytest.fixture()
def registry() -> Iterator[FakeRegistry]:
    fake = FakeRegistry().start()
    yield fake
    fake.stop()


@pytest.fixture()
def make_client(tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(**search: str) -> TestClient:
        settings = Settings.model_validate({"search": {"database": f"sqlite:///{tmp_path / 'index.db'}", **search}})
        client = TestClient(create_app(settings))
        clients.append(client)
        return client.__enter__()

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture()
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def event(
    action: str,
    repository: str,
    *,
    digest: str = "",
    tag: str = "",
    media_type: str = OCI_MANIFEST,
    url: str = "",
    agent: str = "docker/27",
    timestamp: str = "2026-01-02T15:04:05.123456789Z",
) -> dict[str, Any]:
    target: dict[str, Any] = {"repository": repository}
    if action != "delete":
        target.update(mediaType=media_type, size=100, length=100)
    if digest:
        target["digest"] = digest
    if tag:
        target["tag"] = tag
    if url:
        target["url"] = url
    return {
        "id": str(uuid.uuid4()),
        "timestamp": timestamp,
        "action": action,
        "target": target,
        "request": {"id": "r", "addr": "127.0.0.1:1", "host": "h", "method": "GET", "useragent": agent},
        "actor": {},
        "source": {"addr": "host:5000", "instanceID": "i"},
    }


def pushed(registry: FakeRegistry, repository: str, tag: str, digest: str, **extra: Any) -> dict[str, Any]:
    return event("push", repository, digest=digest, tag=tag, url=f"{registry.url}/v2/{repository}/manifests/{digest}", **extra)


def send(client: TestClient, *events: dict[str, Any]) -> int:
    response = client.post("/events", json={"events": list(events)}, headers={"Content-Type": EVENTS_TYPE})
    assert response.status_code == 200, response.text
    return int(response.json()["applied"])


def search(client: TestClient, q: str, **params: Any) -> dict[str, Any]:
    response = client.get("/v1/search", params={"q": q, **params})
    assert response.status_code == 200, response.text
    return response.json()


def found(client: TestClient, q: str) -> list[tuple[str, str]]:
    return [(r["name"], r["description"]) for r in search(client, q)["results"]]


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_a_push_indexes_the_tag_and_reads_the_description_from_config_labels(client: TestClient, registry: FakeRegistry) -> None:
    digest = registry.image("team/web", "v1", labels={DESCRIPTION: "A tiny web server"})
    assert send(client, pushed(registry, "team/web", "v1", digest)) == 1
    assert [name for name, _ in found(client, "team/web")] == ["team/web"]  # at once; the description follows
    eventually(lambda: found(client, "tiny web") == [("team/web", "A tiny web server")])
    # The reads came from the registry with the search service's agent (so they are no pulls).
    assert all(agent.startswith("berth-search/") for _, _, agent in registry.requests)


@pytest.mark.parametrize(
    "case, expected",
    [
        ("manifest annotation beats config label", "from the manifest"),
        ("title when no description anywhere", "Just A Title"),
        ("config description beats annotation title", "from the config"),
        ("index annotation", "from the index"),
        ("image of an index", "amd64 image label"),
    ],
)
def test_where_descriptions_come_from(client: TestClient, registry: FakeRegistry, case: str, expected: str) -> None:
    repo = "team/" + case.split()[0]
    if case.startswith("manifest"):
        digest = registry.image(repo, labels={DESCRIPTION: "from the config"}, annotations={DESCRIPTION: "from the manifest"})
    elif case.startswith("title"):
        digest = registry.image(repo, annotations={TITLE: "Just A Title"})
    elif case.startswith("config"):
        digest = registry.image(repo, labels={DESCRIPTION: "from the config"}, annotations={TITLE: "a title"})
    else:
        arm = registry.image(repo, labels={DESCRIPTION: "arm image label"})
        amd = registry.image(repo, labels={DESCRIPTION: "amd64 image label"})
        index: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": arm, "size": 1, "platform": {"architecture": "arm64", "os": "linux"}},
                {"mediaType": OCI_MANIFEST, "digest": amd, "size": 1, "platform": {"architecture": "amd64", "os": "linux"}},
            ],
        }
        if case.startswith("index"):
            index["annotations"] = {DESCRIPTION: "from the index"}
            registry.routes.clear()  # children unreadable: the index's own annotation must do
            digest = registry.manifest(repo, index)
        else:
            digest = registry.manifest(repo, index)
    send(client, pushed(registry, repo, "latest", digest, media_type=OCI_INDEX if "index" in case else OCI_MANIFEST))
    eventually(lambda: found(client, repo) == [(repo, expected)])


def test_pulls_are_counted_once_per_event_and_never_for_our_own_reads(client: TestClient, registry: FakeRegistry, tmp_path: Path) -> None:
    digest = registry.image("team/pulled", "v1")
    send(client, pushed(registry, "team/pulled", "v1", digest))
    pull = event("pull", "team/pulled", digest=digest, tag="v1")
    send(client, pull, event("pull", "team/pulled", digest=digest))
    send(client, pull)  # the same envelope again: a retry after a lost answer
    send(client, event("pull", "team/pulled", digest=digest, agent="berth-search/0.1"))
    send(client, event("pull", "team/pulled", digest="sha256:" + "a" * 64, media_type="application/octet-stream"))  # a blob
    index = Index.open(f"sqlite:///{tmp_path / 'index.db'}")
    try:
        repo = index.repository("team/pulled")
        assert repo is not None and repo.pull_count == 2
        assert repo.last_push == pytest.approx(1767366245.123456)
    finally:
        index.close()


def test_delete_events_remove_tags_and_then_the_repository(client: TestClient, registry: FakeRegistry) -> None:
    one = registry.image("team/gone", "a", "b", labels={DESCRIPTION: "soon gone"})
    two = registry.image("team/gone", "c", labels={DESCRIPTION: "other image"})
    send(client, pushed(registry, "team/gone", "a", one), pushed(registry, "team/gone", "b", one), pushed(registry, "team/gone", "c", two))
    assert [n for n, _ in found(client, "team/gone")] == ["team/gone"]
    assert send(client, event("delete", "team/gone", digest=one)) == 1  # manifest delete: tags a and b
    assert [n for n, _ in found(client, "team/gone")] == ["team/gone"]
    send(client, event("delete", "team/gone", digest="sha256:" + "b" * 64))  # a blob delete: no tag points at it
    assert [n for n, _ in found(client, "team/gone")] == ["team/gone"]
    send(client, event("delete", "team/gone", tag="c"))
    assert found(client, "team/gone") == [] and search(client, "team/gone")["num_results"] == 0


def test_blob_pushes_and_mounts_change_nothing(client: TestClient, registry: FakeRegistry) -> None:
    blob = "sha256:" + "c" * 64
    applied = send(
        client,
        event("push", "team/blobs", digest=blob, media_type="application/octet-stream", url=f"{registry.url}/v2/team/blobs/blobs/{blob}"),
        event("mount", "team/blobs", digest=blob, media_type="application/octet-stream"),
    )
    assert applied == 0
    assert found(client, "team/blobs") == [] and registry.requests == []


def test_malformed_envelopes_are_refused_and_malformed_events_skipped(client: TestClient, registry: FakeRegistry) -> None:
    for body in (b"not json", b"[]", b'{"events": "x"}', b'{"no": "events"}'):
        response = client.post("/events", content=body, headers={"Content-Type": EVENTS_TYPE})
        assert response.status_code == 400, body
        assert response.json()["errors"][0]["code"] == "UNSUPPORTED"
    good = registry.image("team/good", "v1")
    applied = send(
        client,
        pushed(registry, "team/good", "v1", good),
        event("push", "Bad/UPPER", digest=good, tag="v1"),
        event("push", "team/bad-tag", digest=good, tag="-no good-"),
        event("push", "team/bad-digest", digest="md5:xyz", tag="v1"),
        {"id": "x", "action": "push"},
        "not an event",  # type: ignore[arg-type]
    )
    assert applied == 1
    assert [n for n, _ in found(client, "team")] == ["team/good"]


def test_a_description_read_that_fails_keeps_the_old_one(client: TestClient, registry: FakeRegistry) -> None:
    first = registry.image("team/kept", "v1", labels={DESCRIPTION: "the first words"})
    send(client, pushed(registry, "team/kept", "v1", first))
    eventually(lambda: found(client, "first words") == [("team/kept", "the first words")])
    second = "sha256:" + "d" * 64  # not in the registry: the read fails
    send(client, pushed(registry, "team/kept", "v2", second, timestamp="2026-01-03T00:00:00Z"))
    time.sleep(0.3)
    assert found(client, "first words") == [("team/kept", "the first words")]


def test_a_configured_registry_url_is_used_instead_of_the_event_url(make_client: Callable[..., TestClient], registry: FakeRegistry) -> None:
    client = make_client(registry=registry.url)
    digest = registry.image("team/proxied", labels={DESCRIPTION: "read via the configured registry"})
    elsewhere = event("push", "team/proxied", digest=digest, tag="v1", url=f"http://127.0.0.1:9/v2/team/proxied/manifests/{digest}")
    send(client, elsewhere)
    eventually(lambda: found(client, "configured") == [("team/proxied", "read via the configured registry")])


def test_search_answers_in_docker_hubs_v1_format(client: TestClient, registry: FakeRegistry) -> None:
    for i in range(30):
        send(client, pushed(registry, f"fmt/repo-{i:02d}", "v1", registry.image(f"fmt/repo-{i:02d}")))
    body = search(client, "fmt/")
    assert set(body) == {"num_results", "num_pages", "page", "page_size", "query", "results"}
    assert (body["num_results"], body["num_pages"], body["page"], body["page_size"], body["query"]) == (30, 2, 1, 25, "fmt/")
    assert body["results"][0] == {"name": "fmt/repo-00", "description": "", "star_count": 0, "is_official": False, "is_automated": False}
    assert search(client, "fmt/", page=2)["results"][-1]["name"] == "fmt/repo-29"
    assert search(client, "fmt/", n=1000)["page_size"] == 100
    assert search(client, "fmt/", n=0)["page_size"] == 1
    response = client.get("/v1/search", params={"q": "x", "n": "ten"})
    assert response.status_code == 400 and response.json()["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID"


TOKEN = "shared-secret-0123456789"


def beyond_loopback(tmp_path: Path, **blobstore: str) -> Settings:
    return Settings.model_validate(
        {"search": {"database": f"sqlite:///{tmp_path / 'index.db'}", "addr": "0.0.0.0:5003"}, "blobstore": blobstore}
    )


def test_beyond_loopback_post_events_needs_the_blobstore_token(tmp_path: Path, registry: FakeRegistry) -> None:
    digest = registry.image("team/guarded", "v1")
    envelope = {"events": [pushed(registry, "team/guarded", "v1", digest)]}
    with TestClient(create_app(beyond_loopback(tmp_path, token=TOKEN))) as client:
        for headers in (
            {},
            {"Authorization": "Bearer wrong-secret-0123456789"},
            {"Authorization": TOKEN},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": f"Bearer {TOKEN}x"},
        ):
            refused = client.post("/events", json=envelope, headers=headers)
            assert refused.status_code == 401, headers
            assert refused.json()["errors"][0]["code"] == "UNAUTHORIZED"
            assert refused.headers["www-authenticate"].startswith("Bearer ")
        assert search(client, "team/guarded")["results"] == []  # nothing refused was applied
        assert client.post("/events", json=envelope, headers={"Authorization": f"Bearer {TOKEN}"}).json() == {"applied": 1}
        assert [r["name"] for r in search(client, "team/guarded")["results"]] == ["team/guarded"]
        # Searches and probes stay open (the gateway filters what callers see).
        assert client.get("/_ping").status_code == 200


def test_on_loopback_post_events_asks_for_nothing_unless_told(tmp_path: Path, make_client: Callable[..., TestClient]) -> None:
    assert make_client().post("/events", json={"events": []}).status_code == 200
    settings = Settings.model_validate(
        {"search": {"database": f"sqlite:///{tmp_path / 'other.db'}", "security": "token"}, "blobstore": {"token": TOKEN}}
    )
    with TestClient(create_app(settings)) as client:
        assert client.post("/events", json={"events": []}).status_code == 401


def test_beyond_loopback_without_a_token_the_service_does_not_start(tmp_path: Path) -> None:
    from services.common.config import ConfigError

    for blobstore in ({}, {"token": "too-short"}):
        with pytest.raises(ConfigError, match=r"^blobstore\.token: .*auto: the search service listens on 0\.0\.0\.0:5003"):
            create_app(beyond_loopback(tmp_path, **blobstore))
    none = Settings.model_validate(
        {"search": {"database": f"sqlite:///{tmp_path / 'index.db'}", "addr": "0.0.0.0:5003", "security": "none"}}
    )
    with TestClient(create_app(none)) as client:
        assert client.post("/events", json={"events": []}).status_code == 200


def test_unknown_paths_and_methods_answer_in_the_error_envelope(client: TestClient) -> None:
    # Found by tests/fuzz: FastAPI's own {"detail": "Not Found"} came back instead.
    for method, path, status, code in (
        ("GET", "/0", 404, "NOT_FOUND"),
        ("DELETE", "/v1/search", 405, "UNSUPPORTED"),
        ("GET", "/events", 405, "UNSUPPORTED"),
    ):
        response = client.request(method, path)
        assert response.status_code == status, response.text
        assert [e["code"] for e in response.json()["errors"]] == [code]
    assert "GET" in client.delete("/v1/search").headers["allow"]


def test_a_sender_that_leaves_mid_envelope_is_a_400_not_an_error(tmp_path: Path) -> None:
    # Found by tests/fuzz: ClientDisconnect while reading POST /events was an unhandled error.
    import asyncio

    app = create_app(Settings.model_validate({"search": {"database": f"sqlite:///{tmp_path / 'index.db'}"}}))
    incoming = [{"type": "http.request", "body": b'{"events": [', "more_body": True}, {"type": "http.disconnect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/events",
        "raw_path": b"/events",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-length", b"100"), (b"host", b"x")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 5003),
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 400


def test_absurdly_deep_json_is_refused_like_any_malformed_envelope(client: TestClient) -> None:
    # Found by tests/fuzz: json.loads raised RecursionError, an unhandled error (500, a traceback).
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"events":' + b"[" * 5000 + b"]" * 5000 + b"}"):
        response = client.post("/events", content=body)
        assert response.status_code in (200, 400), response.text
        if response.status_code == 400:
            assert response.json()["errors"][0]["code"] == "UNSUPPORTED"


def test_recent_ids_forget_the_oldest_and_a_repeat_counts_as_new() -> None:
    seen = RecentIds(size=3)
    for event_id in ("a", "b", "c"):
        seen.add(event_id)
    assert "a" in seen  # a lookup does not make "a" recent ...
    seen.add("b")  # ... adding it again does
    seen.add("d")
    assert [i for i in "abcd" if i in seen] == ["b", "c", "d"]
    seen.add("e")
    assert [i for i in "abcde" if i in seen] == ["b", "d", "e"]


def test_recent_ids_are_safe_to_share_between_threads() -> None:
    """Envelopes are applied in a thread pool: concurrent adds past the bound must not fail."""
    from concurrent.futures import ThreadPoolExecutor

    seen = RecentIds(size=50)
    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(lambda n=n: [seen.add(f"{n}-{i}") for i in range(2000)]) for n in range(8)]:
            future.result()
    assert sum(f"{n}-1999" in seen for n in range(8)) >= 1
