"""The whole token flow with a real client: skopeo logs in at Berth's token service through
Berth's gateway challenge, and the rules decide who may push and pull."""
from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

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

    pulled = skopeo("copy", "--quiet", "--src-tls-verify=false", "--src-creds", "reader:reader-password",
                    f"docker://{secured.host}/team/app:v1", f"oci:{tmp_path / 'back'}:v1")
    assert pulled.returncode == 0, pulled.stderr
    assert {p.name for p in (tmp_path / "back" / "blobs" / "sha256").iterdir()} == \
        {p.name for p in (tmp_path / "src" / "blobs" / "sha256").iterdir()}


def test_pull_only_user_cannot_push(secured: Berth, tmp_path: Path) -> None:
    image = single_image(tmp_path / "src", seed="denied")
    denied = push(secured, image.ref(), "team/forbidden:v1", "reader:reader-password")
    assert denied.returncode != 0
    assert "denied" in denied.stderr.lower() or "unauthorized" in denied.stderr.lower()
    with secured.client() as client:
        # Nothing was stored: the admin's token sees no such tag.
        token = client.get(f"{secured.auth_url}/token", params={"service": "berth", "scope": "repository:team/forbidden:pull"},
                           auth=("root", "root-password")).json()["token"]
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
    berth = token_service(workdir, rules=RULES + """
- account: "*"
  name: "${account}/*"
  actions: [pull, push]
- account: [anonymous, "*"]
  name: "public/*"
  actions: [pull]
""")
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
