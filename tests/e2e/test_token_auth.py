"""The whole token flow with a real client: skopeo logs in at Berth's token service through
Berth's gateway challenge, and the rules decide who may push and pull."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.auth.support import add_users, token_service
from tests.images import single_image
from tests.support.processes import Berth

pytestmark = pytest.mark.skopeo

if shutil.which("skopeo") is None:
    pytest.fail("skopeo is not installed (make tools installs it)", pytrace=False)

RULES = """
- account: group:admins
  name: "*"
  actions: ["*"]
- account: group:admins
  type: registry
  name: catalog
  actions: ["*"]
- account: group:readers
  name: "*"
  actions: [pull]
"""


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Berth]:
    workdir = tmp_path_factory.mktemp("secured")
    berth = token_service(workdir, rules=RULES)
    berth.env.update(
        REGISTRY_AUTH_TYPE="token",
        REGISTRY_AUTH_TOKEN_REALM=f"{berth.auth_url}/token",
        REGISTRY_AUTH_TOKEN_JWKS=f"{berth.auth_url}/.well-known/jwks.json",
    )
    add_users(berth, {"root": ("root-password", ["admins"]), "reader": ("reader-password", ["readers"])})
    berth.start("auth", "blobstore", "gateway")
    yield berth
    berth.stop()


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=300)


def push(berth: Berth, image: str, ref: str, creds: str) -> subprocess.CompletedProcess[str]:
    return skopeo("copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", creds, image, f"docker://{berth.host}/{ref}")


def test_admin_pushes_and_reader_pulls(secured: Berth, tmp_path: Path) -> None:
    image = single_image(tmp_path / "src", seed="secured")
    pushed = push(secured, image.ref(), "team/app:v1", "root:root-password")
    assert pushed.returncode == 0, pushed.stderr

    pulled = skopeo(
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--src-creds",
        "reader:reader-password",
        f"docker://{secured.host}/team/app:v1",
        f"oci:{tmp_path / 'back'}:v1",
    )
    assert pulled.returncode == 0, pulled.stderr
    assert {p.name for p in (tmp_path / "back" / "blobs" / "sha256").iterdir()} == {
        p.name for p in (tmp_path / "src" / "blobs" / "sha256").iterdir()
    }


def test_pull_only_user_cannot_push(secured: Berth, tmp_path: Path) -> None:
    image = single_image(tmp_path / "src", seed="denied")
    denied = push(secured, image.ref(), "team/forbidden:v1", "reader:reader-password")
    assert denied.returncode != 0
    assert "denied" in denied.stderr.lower() or "unauthorized" in denied.stderr.lower()
    with secured.client() as client:
        # Nothing was stored: the admin's token sees no such tag.
        token = client.get(
            f"{secured.auth_url}/token",
            params={"service": "berth", "scope": "repository:team/forbidden:pull"},
            auth=("root", "root-password"),
        ).json()["token"]
        r = client.get("/v2/team/forbidden/tags/list", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 404


def test_wrong_password_fails_cleanly(secured: Berth, tmp_path: Path) -> None:
    image = single_image(tmp_path / "src", seed="wrong")
    failed = push(secured, image.ref(), "team/nope:v1", "root:not-the-password")
    assert failed.returncode != 0
    assert "401" in failed.stderr or "unauthorized" in failed.stderr.lower()


def test_anonymous_gets_a_challenge_naming_the_scope(secured: Berth) -> None:
    r = httpx.get(f"{secured.url}/v2/team/app/manifests/v1")
    assert r.status_code == 401
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'realm="{secured.auth_url}/token"' in challenge
    assert 'scope="repository:team/app:pull"' in challenge
    # Anonymous users get nothing under these rules, so the token changes nothing.
    token = httpx.get(f"{secured.auth_url}/token", params={"service": "berth", "scope": "repository:team/app:pull"}).json()["token"]
    assert httpx.get(f"{secured.url}/v2/team/app/manifests/v1", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_search_shows_only_what_the_caller_may_pull(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    workdir = tmp_path_factory.mktemp("secured-search")
    berth = token_service(
        workdir,
        rules=RULES
        + """
- account: "*"
  name: "${account}/*"
  actions: [pull, push]
- account: [anonymous, "*"]
  name: "public/*"
  actions: [pull]
""",
    )
    berth.env.update(
        REGISTRY_AUTH_TYPE="token",
        REGISTRY_AUTH_TOKEN_REALM=f"{berth.auth_url}/token",
        REGISTRY_AUTH_TOKEN_JWKS=f"{berth.auth_url}/.well-known/jwks.json",
        REGISTRY_SEARCH_BACKEND="sqlalchemy",
    )
    add_users(berth, {"root": ("root-password", ["admins"]), "alice": ("alice-password", [])})
    berth.start("auth", "search", "blobstore", "gateway")
    try:
        for ref in ("public/tool:v1", "alice/tool:v1", "private/tool:v1"):
            image = single_image(tmp_path / ref.replace("/", "-").replace(":", "-"), seed=ref)
            assert push(berth, image.ref(), ref, "root:root-password").returncode == 0

        def names(token: str | None) -> set[str]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            deadline = time.monotonic() + 10
            while True:
                r = httpx.get(f"{berth.url}/v1/search", params={"q": "tool"}, headers=headers)
                assert r.status_code == 200, r.text
                found = {result["name"] for result in r.json()["results"]}
                if len(found) >= 3 or time.monotonic() > deadline or token != root:
                    return found
                time.sleep(0.2)

        def login(user: str, password: str) -> str:
            r = httpx.get(f"{berth.auth_url}/token", params={"service": "berth"}, auth=(user, password))
            return r.json()["token"]

        root = login("root", "root-password")
        assert names(root) == {"public/tool", "alice/tool", "private/tool"}
        assert names(login("alice", "alice-password")) == {"public/tool", "alice/tool"}
        assert names(None) == {"public/tool"}
    finally:
        berth.stop()


# --- docker search with credentials, and what a search counts ------------------------------------

SEARCH_RULES = (
    RULES
    + """
- account: "*"
  name: "${account}/*"
  actions: [pull, push]
- account: [anonymous, "*"]
  name: "public/*"
  actions: [pull]
"""
)
# Repositories matching "app" by namespace: alice's own, private ones, public ones (sorted by name
# within each, and the namespaces sort alice < private < public, which is the search's order).
INDEXED = {"alice": 5, "private": 9, "public": 7}
DIGEST = "sha256:" + "ab" * 32


def indexed(namespace: str) -> list[str]:
    return [f"{namespace}/app-{i:02d}" for i in range(INDEXED[namespace])]


@pytest.fixture(scope="module")
def searchable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Berth]:
    """Token auth with a search service whose index holds INDEXED, filled the way registry:2 fills
    it (notifications straight to the search service); failed logins limited to 3 per window."""
    workdir = tmp_path_factory.mktemp("searchable")
    berth = token_service(workdir, rules=SEARCH_RULES, config={"rate_limit": {"attempts": 3, "window": 600}})
    berth.env.update(
        REGISTRY_AUTH_TYPE="token",
        REGISTRY_AUTH_TOKEN_REALM=f"{berth.auth_url}/token",
        REGISTRY_AUTH_TOKEN_JWKS=f"{berth.auth_url}/.well-known/jwks.json",
        REGISTRY_SEARCH_BACKEND="sqlalchemy",
    )
    add_users(
        berth,
        {
            "root": ("root-password", ["admins"]),
            "alice": ("alice-password", []),
            "bob": ("bob-password", ["readers"]),
            "carol": ("carol-password", ["readers"]),
        },
    )
    berth.start("auth", "search", "blobstore", "gateway")
    events = [
        {
            "id": f"event-{name}",
            "timestamp": "2026-01-02T15:04:05Z",
            "action": "push",
            "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "repository": name, "digest": DIGEST, "tag": "v1"},
        }
        for namespace in INDEXED
        for name in indexed(namespace)
    ]
    r = httpx.post(f"{berth.search_url}/events", json={"events": events})
    assert r.status_code == 200 and r.json()["applied"] == len(events), r.text
    yield berth
    berth.stop()


def search_page(
    berth: Berth,
    n: int,
    page: int,
    *,
    auth: httpx.Auth | None = None,
    headers: dict[str, str] | None = None,
    local_address: str | None = None,
) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=local_address) if local_address else None
    with httpx.Client(base_url=berth.url, timeout=30, transport=transport) as client:
        return client.get("/v1/search", params={"q": "app", "n": str(n), "page": str(page)}, auth=auth, headers=headers)


def all_pages(berth: Berth, n: int, **who: Any) -> tuple[int, int, list[list[str]]]:
    """(num_results, num_pages, the names of every page) as the caller pages through them, checking
    that every page says the same counts."""
    first = search_page(berth, n, 1, **who)
    assert first.status_code == 200, first.text
    total, pages = first.json()["num_results"], first.json()["num_pages"]
    names = [[r["name"] for r in first.json()["results"]]]
    for page in range(2, pages + 2):  # one past the last: empty, same counts
        body = search_page(berth, n, page, **who).json()
        assert (body["num_results"], body["num_pages"], body["page"]) == (total, pages, page)
        names.append([r["name"] for r in body["results"]])
    assert names[-1] == [], "the page after the last one is empty"
    return total, pages, names[:-1]


def test_the_v1_ping_answers_as_a_standalone_registry(searchable: Berth) -> None:
    """The docker daemon pings /v1/_ping before `docker search` and sends the stored credentials
    only to a registry that says it is standalone (X-Docker-Registry-Standalone: true or 1)."""
    r = httpx.get(f"{searchable.url}/v1/_ping")
    assert r.status_code == 200
    assert r.headers["x-docker-registry-standalone"] == "true"
    assert r.headers["x-docker-registry-version"][:1].isdigit()


def test_anonymous_searches_count_and_page_only_what_anonymous_may_pull(searchable: Berth) -> None:
    total, pages, names = all_pages(searchable, 3)
    assert (total, pages) == (7, 3)
    assert names == [indexed("public")[0:3], indexed("public")[3:6], indexed("public")[6:7]]


def test_docker_search_with_stored_credentials_shows_what_the_user_may_pull(searchable: Berth) -> None:
    """What the docker daemon sends after such a ping: Basic credentials on /v1/search (with
    X-Docker-Token: true). They are checked at the token service, and the answer holds exactly the
    repositories the account may pull, counted and paged over those alone."""
    docker = {"X-Docker-Token": "true"}
    total, pages, names = all_pages(searchable, 5, auth=("alice", "alice-password"), headers=docker)
    assert (total, pages) == (12, 3)
    assert [name for page in names for name in page] == indexed("alice") + indexed("public")
    assert names[0] == indexed("alice")

    total, pages, names = all_pages(searchable, 10, auth=("root", "root-password"), headers=docker)
    assert (total, pages) == (21, 3)
    assert [name for page in names for name in page] == indexed("alice") + indexed("private") + indexed("public")

    # Basic shows what the account's own token shows.
    for user, expected in (("alice", 12), ("bob", 21)):
        token = httpx.get(f"{searchable.auth_url}/token", params={"service": "berth"}, auth=(user, f"{user}-password")).json()["token"]
        by_token = all_pages(searchable, 25, headers={"Authorization": f"Bearer {token}"})
        assert by_token[0] == expected
        assert all_pages(searchable, 25, auth=(user, f"{user}-password")) == by_token


def test_bad_basic_credentials_are_401_with_the_usual_challenge(searchable: Berth) -> None:
    for auth in (("alice", "wrong-password"), ("nobody", "whatever")):
        r = search_page(searchable, 25, 1, auth=auth, local_address="127.0.0.4")
        assert r.status_code == 401, r.text
        assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
        challenge = r.headers["www-authenticate"]
        assert challenge.startswith("Bearer ") and f'realm="{searchable.auth_url}/token"' in challenge and 'service="berth"' in challenge
    r = search_page(searchable, 25, 1, headers={"Authorization": "Basic bm90LWJhc2U2NA"}, local_address="127.0.0.4")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer ")
    # Bearer tokens still are what the other routes take: Basic there is a plain challenge.
    r = httpx.get(f"{searchable.url}/v2/public/app-00/tags/list", auth=("alice", "alice-password"))
    assert r.status_code == 401 and 'scope="repository:public/app-00:pull"' in r.headers["www-authenticate"]


def test_basic_searches_meet_the_token_services_failed_login_limits(searchable: Berth) -> None:
    """Failed logins through /v1/search count as any login does: per account, and per client
    address, which the gateway passes on (so one client's failures do not block another's)."""
    for _ in range(3):
        assert search_page(searchable, 25, 1, auth=("carol", "not-carols"), local_address="127.0.0.2").status_code == 401
    blocked = search_page(searchable, 25, 1, auth=("carol", "carol-password"), local_address="127.0.0.3")
    assert blocked.status_code == 429 and blocked.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert int(blocked.headers["retry-after"]) > 0
    # The address 127.0.0.2 is blocked for every account; others are not.
    assert search_page(searchable, 25, 1, auth=("alice", "alice-password"), local_address="127.0.0.2").status_code == 429
    ok = search_page(searchable, 25, 1, auth=("alice", "alice-password"), local_address="127.0.0.3")
    assert ok.status_code == 200 and ok.json()["num_results"] == 12
