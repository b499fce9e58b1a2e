"""The reference Go registry (Debian's docker-registry, distribution 2.8) trusts our tokens through
the certificate written next to the key, found by the libtrust kid; skopeo logs in through it.

This is the proof that the kid, the certificate and the claims are what registry:2 expects, rather
than what our own code believes.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.auth.support import ISSUER, SERVICE, add_users, get_token, key_path, token_of, token_service
from tests.images import single_image
from tests.support.processes import Berth, free_port

if shutil.which("docker-registry") is None:  # `make test` installs it; a bare pytest run says what is missing
    pytest.fail("docker-registry is not installed (make tools installs it)", pytrace=False)

REGISTRY_CONFIG = """\
version: 0.1
log: {{level: warn}}
storage: {{inmemory: {{}}}}
http: {{addr: "127.0.0.1:{port}"}}
auth:
  token:
    realm: "{realm}"
    service: {service}
    issuer: {issuer}
    rootcertbundle: "{bundle}"
"""


@pytest.fixture(scope="module", params=["ES256", "RS256"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Berth, str]]:
    """Our token service with the test rules, and a Go registry trusting its certificate."""
    workdir = tmp_path_factory.mktemp(f"interop-{request.param}")
    auth = token_service(workdir, config={"algorithm": request.param})
    add_users(auth, {"admin": ("admin-password", ["admins"]), "alice": ("alice-password", [])})
    auth.start("auth")
    port = free_port()
    config = workdir / "registry.yml"
    config.write_text(
        REGISTRY_CONFIG.format(
            port=port, realm=f"{auth.auth_url}/token", service=SERVICE, issuer=ISSUER, bundle=key_path(auth).with_suffix(".crt")
        )
    )
    with open(workdir / "registry.log", "wb") as log:
        proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{url}/v2/", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, (workdir / "registry.log").read_text()
                time.sleep(0.1)
        yield auth, url
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        auth.stop()


def registry_get(url: str, path: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{url}{path}", headers=headers, timeout=10)


def token_for(auth: Berth, user: str | None, *scopes: str) -> str:
    with auth.auth_client() as client:
        return token_of(get_token(client, *scopes, user=user))


def test_registry_challenges_towards_our_realm(stack: tuple[Berth, str]) -> None:
    auth, url = stack
    r = registry_get(url, "/v2/", None)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == f'Bearer realm="{auth.auth_url}/token",service="{SERVICE}"'


def test_registry_accepts_what_the_token_grants_and_nothing_more(stack: tuple[Berth, str]) -> None:
    auth, url = stack
    admin = token_for(auth, "admin", "repository:some/repo:pull", "registry:catalog:*")
    assert registry_get(url, "/v2/", admin).status_code == 200
    # Authorized: the repository is just unknown (404), not forbidden (401).
    assert registry_get(url, "/v2/some/repo/tags/list", admin).status_code == 404
    assert registry_get(url, "/v2/_catalog", admin).status_code == 200
    assert registry_get(url, "/v2/other/repo/tags/list", admin).status_code == 401  # not in the token

    alice = token_for(auth, "alice", "repository:some/repo:pull", "registry:catalog:*")
    assert registry_get(url, "/v2/some/repo/tags/list", alice).status_code == 401  # rules granted nothing
    assert registry_get(url, "/v2/_catalog", alice).status_code == 401
    own = token_for(auth, "alice", "repository:alice/app:pull")
    assert registry_get(url, "/v2/alice/app/tags/list", own).status_code == 404


def test_registry_refuses_tokens_of_another_key(stack: tuple[Berth, str], tmp_path: Path) -> None:
    _auth, url = stack
    other = token_service(tmp_path, config={"algorithm": "ES256"})
    add_users(other, {"admin": ("admin-password", ["admins"])})
    other.start("auth")
    try:
        foreign = token_for(other, "admin", "repository:some/repo:pull")
        assert registry_get(url, "/v2/some/repo/tags/list", foreign).status_code == 401
    finally:
        other.stop()


@pytest.mark.skopeo
def test_skopeo_pushes_and_pulls_with_credentials(stack: tuple[Berth, str], tmp_path: Path) -> None:
    if shutil.which("skopeo") is None:
        pytest.fail("skopeo is not installed (make tools installs it)", pytrace=False)
    _auth, url = stack
    image = single_image(tmp_path / "src", seed=f"interop-{url}")
    host = url.removeprefix("http://")

    def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)

    pushed = skopeo(
        "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", "alice:alice-password", image.ref(), f"docker://{host}/alice/app:v1"
    )
    assert pushed.returncode == 0, pushed.stderr
    inspected = skopeo("inspect", "--raw", "--tls-verify=false", "--creds", "alice:alice-password", f"docker://{host}/alice/app:v1")
    assert inspected.returncode == 0, inspected.stderr
    # Outside her namespace the token grants nothing, so the Go registry refuses the push.
    refused = skopeo(
        "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", "alice:alice-password", image.ref(), f"docker://{host}/bob/app:v1"
    )
    assert refused.returncode != 0
    wrong = skopeo("inspect", "--raw", "--tls-verify=false", "--creds", "alice:wrong", f"docker://{host}/alice/app:v1")
    assert wrong.returncode != 0
