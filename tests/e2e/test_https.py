"""The gateway over HTTPS (``http.tls``): skopeo pushes and pulls trusting a test CA, and refuses
without it; Location headers say https; minimum version and client certificates hold; unusable
files stop the gateway before it listens, naming the key."""

from __future__ import annotations

import hashlib
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.images import single_image
from tests.support.certs import Authority, Issued
from tests.support.processes import ROOT, Berth

pytestmark = pytest.mark.skopeo

if shutil.which("skopeo") is None:  # `make test` installs it; a bare pytest run says what is missing
    pytest.fail("skopeo is not installed (make tools installs it)", pytrace=False)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server_cert(ca: Authority) -> Issued:
    return ca.issue("registry", server=True)


def tls_env(cert: Issued, **extra: str) -> dict[str, str]:
    return {"REGISTRY_HTTP_TLS_CERTIFICATE": str(cert.cert), "REGISTRY_HTTP_TLS_KEY": str(cert.key), **extra}


@pytest.fixture(scope="module")
def https_berth(tmp_path_factory: pytest.TempPathFactory, server_cert: Issued) -> Iterator[Berth]:
    berth = Berth(tmp_path_factory.mktemp("berth-https"), env=tls_env(server_cert))
    berth.start()
    yield berth
    berth.stop()


def trusting(ca: Authority) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca.path))


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], check=False, capture_output=True, text=True, timeout=300)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_skopeo_pushes_and_pulls_over_https_trusting_the_ca(https_berth: Berth, ca: Authority, tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(ca.path, certs / "ca.crt")
    image = single_image(tmp_path / "src", seed="over-https")
    remote = f"docker://{https_berth.host}/e2e/tls:v1"

    pushed = skopeo("copy", "--quiet", f"--dest-cert-dir={certs}", "--dest-tls-verify=true", image.ref(), remote)
    assert pushed.returncode == 0, pushed.stderr
    raw = skopeo("inspect", "--raw", f"--cert-dir={certs}", "--tls-verify=true", remote)
    assert raw.returncode == 0, raw.stderr
    assert sha256(raw.stdout.encode()) == image.manifest_digests[0]

    pulled = skopeo("copy", "--quiet", f"--src-cert-dir={certs}", "--src-tls-verify=true", remote, f"oci:{tmp_path / 'back'}:v1")
    assert pulled.returncode == 0, pulled.stderr
    back = {p.name for p in (tmp_path / "back" / "blobs" / "sha256").iterdir()}
    assert back == {p.name for p in (tmp_path / "src" / "blobs" / "sha256").iterdir()}


def test_skopeo_refuses_the_registry_without_the_ca(https_berth: Berth, tmp_path: Path) -> None:
    empty = tmp_path / "no-certs"
    empty.mkdir()
    image = single_image(tmp_path / "src", seed="untrusted")
    result = skopeo(
        "copy",
        "--quiet",
        f"--dest-cert-dir={empty}",
        "--dest-tls-verify=true",
        image.ref(),
        f"docker://{https_berth.host}/e2e/untrusted:v1",
    )
    assert result.returncode != 0
    assert "certificate" in result.stderr.lower()


def test_locations_are_https_and_plain_http_is_refused(https_berth: Berth, ca: Authority) -> None:
    base = f"https://{https_berth.host}"
    with httpx.Client(base_url=base, verify=trusting(ca), timeout=30) as client:
        assert client.get("/v2/").status_code == 200
        r = client.post("/v2/e2e/locations/blobs/uploads/")
        assert r.status_code == 202
        assert r.headers["location"].startswith(f"{base}/v2/e2e/locations/blobs/uploads/")
        assert client.get(r.headers["location"]).status_code == 204
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{https_berth.host}/v2/", timeout=5)


def test_minimum_tls_version(tmp_path: Path, server_cert: Issued, ca: Authority) -> None:
    berth = Berth(tmp_path, env=tls_env(server_cert, REGISTRY_HTTP_TLS_MINIMUMTLS="tls1.3"))
    berth.start()
    try:
        old = trusting(ca)
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"https://{berth.host}/v2/", verify=old, timeout=5)
        assert httpx.get(f"https://{berth.host}/v2/", verify=trusting(ca), timeout=5).status_code == 200
    finally:
        berth.stop()


def test_client_certificates_from_the_client_cas_are_required(tmp_path: Path, server_cert: Issued, ca: Authority) -> None:
    clients = Authority(tmp_path, "client CA")
    alice = clients.issue("alice", server=False)
    stranger = Authority(tmp_path, "other CA").issue("mallory", server=False)
    config = tmp_path / "config.yml"
    config.write_text(f"http:\n  tls:\n    clientcas: [{str(clients.path)!r}]\n")
    berth = Berth(tmp_path, env={"DOCKER_REGISTRY_CONFIG": str(config), **tls_env(server_cert)})
    berth.start()
    url = f"https://{berth.host}/v2/"
    try:
        for who in (None, stranger):
            context = trusting(ca)
            if who is not None:
                context.load_cert_chain(who.cert, who.key)
            with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
                httpx.get(url, verify=context, timeout=5)
        context = trusting(ca)
        context.load_cert_chain(alice.cert, alice.key)
        assert httpx.get(url, verify=context, timeout=5).status_code == 200
    finally:
        berth.stop()


@pytest.mark.parametrize("problem", ["missing certificate", "missing key", "key of another certificate", "not PEM"])
def test_unusable_files_stop_the_gateway_naming_the_key(tmp_path: Path, server_cert: Issued, ca: Authority, problem: str) -> None:
    other = ca.issue("other", server=True)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cert, key, named = {
        "missing certificate": (tmp_path / "nope.crt", server_cert.key, "http.tls.certificate"),
        "missing key": (server_cert.cert, tmp_path / "nope.key", "http.tls.key"),
        "key of another certificate": (server_cert.cert, other.key, "http.tls.key"),
        "not PEM": (garbage, server_cert.key, "http.tls.certificate"),
    }[problem]
    berth = Berth(tmp_path, env={"REGISTRY_HTTP_TLS_CERTIFICATE": str(cert), "REGISTRY_HTTP_TLS_KEY": str(key)})
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "gateway"],
        check=False,
        cwd=ROOT,
        env=berth.environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert named in result.stderr, result.stderr
