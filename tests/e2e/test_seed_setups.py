"""The runnable setups of ../shared/seeds, started with `berth run` as their documents describe and
driven by skopeo: registry:2's sample config.yml, the classic quick start storing into S3 (a
moto server stands in for AWS), and registry:2's htpasswd + TLS environment form.

Only the gateway's address is moved to a free port (the documents use 5000) and the storage
folder into the test's own; everything else is the document's.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.images import single_image
from tests.support.auth import write_htpasswd
from tests.support.certs import Authority
from tests.support.processes import BerthRun, free_port
from tests.support.s3 import ACCESS_KEY, SECRET_KEY, MotoServer

pytestmark = pytest.mark.skopeo
SEEDS = Path(__file__).resolve().parents[1] / "common" / "config" / "seeds"

if shutil.which("skopeo") is None:  # `make test` installs it; a bare pytest run says what is missing
    pytest.fail("skopeo is not installed (make tools installs it)", pytrace=False)


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], check=False, capture_output=True, text=True, timeout=300)


def round_trip(host: str, tmp_path: Path, repo: str, *flags: str, cert_dir: Path | None = None) -> None:
    """Pushes an image, pulls it back, and checks the layer digests came back unchanged."""
    image = single_image(tmp_path / f"src-{repo.replace('/', '-')}", seed=repo)
    tls = [f"--dest-cert-dir={cert_dir}", "--dest-tls-verify=true"] if cert_dir else ["--dest-tls-verify=false"]
    pushed = skopeo("copy", "--quiet", *tls, *flags, image.ref(), f"docker://{host}/{repo}:v1")
    assert pushed.returncode == 0, pushed.stderr
    src_tls = [f"--src-cert-dir={cert_dir}", "--src-tls-verify=true"] if cert_dir else ["--src-tls-verify=false"]
    src_flags = [f.replace("--dest-", "--src-") for f in flags]
    back = tmp_path / f"back-{repo.replace('/', '-')}"
    pulled = skopeo("copy", "--quiet", *src_tls, *src_flags, f"docker://{host}/{repo}:v1", f"oci:{back}:v1")
    assert pulled.returncode == 0, pulled.stderr
    sent = {p.name for p in (image.path / "blobs" / "sha256").iterdir()}
    assert {p.name for p in (back / "blobs" / "sha256").iterdir()} == sent


@pytest.fixture()
def running() -> Iterator[list[BerthRun]]:
    started: list[BerthRun] = []
    yield started
    for run in started:
        run.stop()


def test_registry2_sample_config_serves_with_its_own_ports_kept_free(tmp_path: Path, running: list[BerthRun]) -> None:
    port = free_port()
    run = BerthRun(
        tmp_path,
        {
            "DOCKER_REGISTRY_CONFIG": str(SEEDS / "registry2-image-config.yml"),
            "REGISTRY_HTTP_ADDR": f":{port}",
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "registry-dev"),
        },
        f"http://127.0.0.1:{port}",
    )
    running.append(run.start())
    host = f"127.0.0.1:{port}"
    round_trip(host, tmp_path, "hello-mine")
    tags = httpx.get(f"{run.url}/v2/hello-mine/tags/list", timeout=10)
    assert tags.json() == {"name": "hello-mine", "tags": ["v1"]}
    assert tags.headers["docker-distribution-api-version"] == "registry/2.0"
    # registry:2's default: deletes are refused unless storage.delete.enabled.
    deleted = httpx.delete(f"{run.url}/v2/hello-mine/manifests/v1", timeout=10)
    assert deleted.status_code == 405 and deleted.json()["errors"][0]["code"] == "UNSUPPORTED"
    assert (tmp_path / "registry-dev" / "docker" / "registry" / "v2" / "repositories" / "hello-mine").is_dir()
    log = run.log()
    # Said once (by `berth run`, not again by each service), and the moved listeners are named.
    assert log.count("http.debug.addr (registry:2)") == 1, log
    assert "blobstore.addr: port 5001" in log and "search.addr: port 5003" in log


def test_classic_example_config_found_under_config_like_the_classic_registry(tmp_path: Path, running: list[BerthRun]) -> None:
    (tmp_path / "config").mkdir()
    shutil.copy(SEEDS / "classic-0.9.1-example.yml", tmp_path / "config" / "config.yml")
    port = free_port()
    run = BerthRun(
        tmp_path,
        {
            "DOCKER_REGISTRY_CONFIG": "config.yml",  # relative: looked up under config/, as the classic registry did
            "SETTINGS_FLAVOR": "dev",
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "docker"),  # the file's /home/myself/docker
            "REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}",
            "REGISTRY_BLOBSTORE_ADDR": f"127.0.0.1:{free_port()}",
            "REGISTRY_BLOBSTORE_HTTP_ADDR": "",
        },
        f"http://127.0.0.1:{port}",
    )
    running.append(run.start())
    round_trip(f"127.0.0.1:{port}", tmp_path, "classic/app")
    assert (tmp_path / "docker" / "docker" / "registry" / "v2" / "repositories" / "classic" / "app").is_dir()
    # search_backend is "_env:SEARCH_BACKEND:" (empty): no search service, an empty answer.
    assert httpx.get(f"{run.url}/v1/search", params={"q": "app"}, timeout=10).json()["num_results"] == 0


def test_classic_quick_start_stores_into_s3(tmp_path: Path, running: list[BerthRun], moto: MotoServer) -> None:
    bucket = moto.new_bucket("quickstart")
    endpoint = httpx.URL(moto.endpoint)
    port = free_port()
    run = BerthRun(
        tmp_path,
        {
            # The README's line ...
            "SETTINGS_FLAVOR": "s3",
            "AWS_BUCKET": bucket,
            "STORAGE_PATH": "/registry",
            "AWS_KEY": ACCESS_KEY,
            "AWS_SECRET": SECRET_KEY,
            "SEARCH_BACKEND": "sqlalchemy",
            # ... with the S3-compatible endpoint the classic s3 flavor reads (boto_host, boto_port, s3_secure).
            "AWS_HOST": str(endpoint.host),
            "AWS_PORT": str(endpoint.port),
            "AWS_SECURE": "false",
            "REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}",
            "REGISTRY_BLOBSTORE_ADDR": f"127.0.0.1:{free_port()}",
            "REGISTRY_BLOBSTORE_HTTP_ADDR": "",
            "REGISTRY_SEARCH_ADDR": f"127.0.0.1:{free_port()}",
        },
        f"http://127.0.0.1:{port}",
    )
    running.append(run.start())
    round_trip(f"127.0.0.1:{port}", tmp_path, "quick/start")
    keys = [o["Key"] for o in moto.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert any(k.startswith("registry/docker/registry/v2/repositories/quick/start/") for k in keys), keys
    assert any(k.startswith("registry/docker/registry/v2/blobs/sha256/") for k in keys), keys
    assert not (tmp_path / "data" / "registry").exists()  # nothing on the local disk
    found = httpx.get(f"{run.url}/v1/search", params={"q": "start"}, timeout=10).json()
    assert found["num_results"] in (0, 1)  # the search service runs (SEARCH_BACKEND=sqlalchemy); events are asynchronous


def test_registry2_htpasswd_environment_form_closes_the_registry(tmp_path: Path, running: list[BerthRun]) -> None:
    (tmp_path / "pki").mkdir()
    ca = Authority(tmp_path / "pki")
    cert = ca.issue("myregistrydomain", server=True)
    write_htpasswd(tmp_path / "auth" / "htpasswd", {"testuser": "testpassword"})
    port = free_port()
    run = BerthRun(
        tmp_path,
        {
            "REGISTRY_AUTH": "htpasswd",
            "REGISTRY_AUTH_HTPASSWD_REALM": "Registry Realm",
            "REGISTRY_AUTH_HTPASSWD_PATH": str(tmp_path / "auth" / "htpasswd"),
            "REGISTRY_HTTP_TLS_CERTIFICATE": str(cert.cert),
            "REGISTRY_HTTP_TLS_KEY": str(cert.key),
            "REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}",
            "REGISTRY_BLOBSTORE_ADDR": f"127.0.0.1:{free_port()}",
            "REGISTRY_BLOBSTORE_HTTP_ADDR": "",
            "REGISTRY_SEARCH_ADDR": f"127.0.0.1:{free_port()}",
        },
        f"https://127.0.0.1:{port}",
    )
    running.append(run.start())
    with httpx.Client(base_url=run.url, verify=ssl.create_default_context(cafile=str(ca.path)), timeout=10) as client:
        challenged = client.get("/v2/")
        assert challenged.status_code == 401
        assert challenged.headers["www-authenticate"] == 'Basic realm="Registry Realm"'
        assert client.get("/v2/", auth=("testuser", "wrong")).status_code == 401
        assert client.get("/v2/", auth=("testuser", "testpassword")).status_code == 200
        assert client.get("/").status_code == 200  # load balancers' health check
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(ca.path, certs / "ca.crt")
    host = f"127.0.0.1:{port}"
    image = single_image(tmp_path / "anon", seed="anonymous")
    refused = skopeo("copy", "--quiet", f"--dest-cert-dir={certs}", image.ref(), f"docker://{host}/nobody/app:v1")
    assert refused.returncode != 0
    auth_file = tmp_path / "auth.json"
    login = skopeo("login", f"--cert-dir={certs}", f"--authfile={auth_file}", "-u", "testuser", "-p", "testpassword", host)
    assert login.returncode == 0, login.stderr
    round_trip(host, tmp_path, "testuser/app", f"--dest-authfile={auth_file}", cert_dir=certs)
