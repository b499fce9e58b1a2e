"""Basic auth against an htpasswd file: challenges, good and bad credentials, file changes picked
up live, the bcrypt work shared and cached, and skopeo pushing with --dest-creds."""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cachetools import TTLCache

from services.common.config import HtpasswdAuthSettings
from services.gateway.access.htpasswd import CACHE_SIZE, SUCCESS_TTL, HtpasswdAccessController
from tests.images import single_image
from tests.support.auth import basic, write_htpasswd
from tests.support.processes import Berth
from tests.support.registry import assert_error, checked_client, push_image, raw_request

REALM = "Berth test realm"
USERS = {"alice": "wonderland", "bob": "builder:with:colons"}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Berth]:
    workdir = tmp_path_factory.mktemp("berth-htpasswd")
    write_htpasswd(workdir / "htpasswd", USERS)
    instance = Berth(
        workdir,
        env={
            "REGISTRY_AUTH_TYPE": "htpasswd",
            "REGISTRY_AUTH_HTPASSWD_REALM": REALM,
            "REGISTRY_AUTH_HTPASSWD_PATH": str(workdir / "htpasswd"),
        },
    )
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture()
def client(registry: Berth) -> Iterator[httpx.Client]:
    start = (registry.workdir / "gateway.log").stat().st_size
    with checked_client(registry.url) as c:
        yield c
    assert "Traceback" not in registry.log("gateway")[start:]


def assert_challenged(r: httpx.Response, method: str = "GET") -> None:
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == f'Basic realm="{REALM}"'
    if method != "HEAD":
        assert_error(r, 401, "UNAUTHORIZED")


@pytest.mark.parametrize("path", ["/", "/_ping", "/v1/_ping"])
def test_open_routes(client: httpx.Client, path: str) -> None:
    assert client.get(path).status_code == 200


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_base_route_challenges_without_credentials(client: httpx.Client, method: str) -> None:
    assert_challenged(client.request(method, "/v2/"), method)
    assert client.request(method, "/v2/", headers=basic("alice", USERS["alice"])).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/_catalog"),
        ("GET", "/v2/some/repo/tags/list"),
        ("POST", "/v2/some/repo/blobs/uploads/"),
        ("DELETE", "/v2/some/repo/manifests/sha256:" + "0" * 64),
        ("HEAD", "/v2/some/repo/blobs/sha256:" + "0" * 64),
    ],
)
def test_every_api_route_needs_credentials(client: httpx.Client, method: str, path: str) -> None:
    assert_challenged(client.request(method, path), method)


def test_valid_credentials_grant_everything(client: httpx.Client, repo: str) -> None:
    client.headers.update(basic("bob", USERS["bob"]))  # a password with colons in it
    digest, _ = push_image(client, repo, "v1")
    assert client.get(f"/v2/{repo}/manifests/v1").status_code == 200
    assert repo in client.get("/v2/_catalog", params={"n": 10000}).json()["repositories"]
    assert client.delete(f"/v2/{repo}/manifests/{digest}").status_code == 202


@pytest.mark.parametrize(
    "header",
    [
        "Basic " + base64.b64encode(b"alice:wrong").decode(),
        "Basic " + base64.b64encode(b"nobody:wonderland").decode(),
        "Basic " + base64.b64encode(b"alice:" + b"w" * 100).decode(),  # longer than bcrypt reads
        "Basic " + base64.b64encode(b"alice").decode(),  # no colon
        "Basic " + base64.b64encode(b":wonderland").decode(),  # no user
        "Basic " + base64.b64encode(b"alice:wonderland")[:-3].decode() + "!!",  # not base64
        "Basic " + base64.b64encode(b"alice:\xffwonderland").decode(),  # not UTF-8
        "Basic",
        "Bearer " + base64.b64encode(b"alice:wonderland").decode(),
        base64.b64encode(b"alice:wonderland").decode(),
    ],
)
def test_bad_or_malformed_credentials(registry: Berth, header: str) -> None:
    r = raw_request(registry.http_port, "GET", "/v2/", {"Authorization": header})
    assert r.status == 401
    assert r.headers["www-authenticate"] == f'Basic realm="{REALM}"'
    assert [e["code"] for e in r.json()["errors"]] == ["UNAUTHORIZED"]


def test_search_takes_credentials_if_sent_and_never_asks(client: httpx.Client) -> None:
    # Past the access check, whatever the search service then says (200, or 503 without one).
    for headers in ({}, basic("alice", USERS["alice"])):
        r = client.get("/v1/search", params={"q": "x"}, headers=headers)
        assert r.status_code != 401 and "www-authenticate" not in r.headers
    assert_challenged(client.get("/v1/search", params={"q": "x"}, headers=basic("alice", "wrong")))


def test_scheme_is_case_insensitive(registry: Berth) -> None:
    value = base64.b64encode(b"alice:wonderland").decode()
    assert raw_request(registry.http_port, "GET", "/v2/", {"Authorization": f"basic {value}"}).status == 200


def test_file_changes_are_picked_up_without_restart(client: httpx.Client, registry: Berth) -> None:
    path = registry.workdir / "htpasswd"
    original = path.read_bytes()
    try:
        assert client.get("/v2/", headers=basic("carol", "new-user")).status_code == 401
        write_htpasswd(path, {**USERS, "carol": "new-user", "alice": "changed"})
        assert client.get("/v2/", headers=basic("carol", "new-user")).status_code == 200
        # A cached success must not outlive a password change.
        assert client.get("/v2/", headers=basic("alice", "changed")).status_code == 200
        assert_challenged(client.get("/v2/", headers=basic("alice", USERS["alice"])))
        path.unlink()
        assert_challenged(client.get("/v2/", headers=basic("carol", "new-user")))
    finally:
        path.write_bytes(original)
    assert client.get("/v2/", headers=basic("alice", USERS["alice"])).status_code == 200


def test_concurrent_and_repeated_logins_cost_one_bcrypt_check(tmp_path: Path) -> None:
    write_htpasswd(tmp_path / "htpasswd", {"alice": "pw"}, rounds=6)
    controller = HtpasswdAccessController(HtpasswdAuthSettings(path=str(tmp_path / "htpasswd")))

    async def scenario() -> None:
        results = await asyncio.gather(*(controller.check("alice", "pw") for _ in range(50)))
        assert all(results) and controller.bcrypt_checks == 1
        assert await controller.check("alice", "pw") and controller.bcrypt_checks == 1
        assert not await controller.check("alice", "wrong")  # failures are not cached as successes
        assert not await controller.check("alice", "wrong")
        assert controller.bcrypt_checks == 3
        assert not await controller.check("mallory", "pw")  # unknown users cost a check too
        assert controller.bcrypt_checks == 4

    asyncio.run(scenario())


@pytest.mark.skopeo
def test_skopeo_pushes_with_dest_creds_and_fails_with_a_wrong_password(registry: Berth, tmp_path: Path) -> None:
    if shutil.which("skopeo") is None:
        pytest.fail("skopeo is not installed (make tools installs it)", pytrace=False)
    image = single_image(tmp_path / "src", seed="htpasswd-push")
    remote = f"docker://{registry.host}/auth/skopeo:v1"

    def copy(creds: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", creds, image.ref(), remote],
            capture_output=True,
            text=True,
            timeout=300,
        )

    refused = copy("alice:not-the-password")
    assert refused.returncode != 0
    assert "401" in refused.stderr or "unauthorized" in refused.stderr.lower(), refused.stderr

    pushed = copy(f"alice:{USERS['alice']}")
    assert pushed.returncode == 0, pushed.stderr
    with httpx.Client(base_url=registry.url, headers=basic("alice", USERS["alice"])) as c:
        r = c.head("/v2/auth/skopeo/manifests/v1", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        assert r.status_code == 200
        assert r.headers["docker-content-digest"] == image.manifest_digests[0]


def test_a_cached_success_is_checked_again_after_its_ttl(tmp_path: Path) -> None:
    write_htpasswd(tmp_path / "htpasswd", {"alice": "pw"}, rounds=4)
    controller = HtpasswdAccessController(HtpasswdAuthSettings(path=str(tmp_path / "htpasswd")))
    now = [1000.0]
    controller._good = TTLCache(maxsize=CACHE_SIZE, ttl=SUCCESS_TTL, timer=lambda: now[0])

    async def scenario() -> None:
        assert await controller.check("alice", "pw") and controller.bcrypt_checks == 1
        now[0] += SUCCESS_TTL - 1
        assert await controller.check("alice", "pw") and controller.bcrypt_checks == 1
        now[0] += 2
        assert await controller.check("alice", "pw") and controller.bcrypt_checks == 2

    asyncio.run(scenario())
