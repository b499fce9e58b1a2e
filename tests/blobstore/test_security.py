"""Gateway <-> blobstore security (issue 5): with security token or mtls the blobstore answers no
call without credentials (health probes excepted), and a gateway configured alike still works."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.config import BlobstoreSettings, BlobstoreTLSSettings, ConfigError
from services.common.errors import UNAVAILABLE, RegistryError
from services.common.rpc import blobstore_pb2 as pb
from services.common.rpc import blobstore_pb2_grpc as pb_grpc
from services.gateway.blobstore_client import BlobstoreClient
from tests.support.certs import Authority, Issued
from tests.support.processes import ROOT, Berth
from tests.support.registry import push_blob, push_image

TOKEN = "s3cret-token-for-the-blobstore"


@dataclass(frozen=True)
class PKI:
    ca: Path
    server: Issued
    client: Issued
    foreign_client: Issued  # signed by a CA the blobstore does not trust


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    directory = tmp_path_factory.mktemp("pki")
    ca = Authority(directory, "berth")
    other = Authority(directory, "other")
    return PKI(
        ca=ca.path,
        server=ca.issue("blobstore", server=True, dns=("blobstore.internal",)),
        client=ca.issue("gateway", server=False),
        foreign_client=other.issue("intruder", server=False),
    )


# Direct calls


def _list(channel: grpc.Channel, metadata: tuple[tuple[str, str], ...] = ()) -> pb.NameList:
    return pb_grpc.BlobstoreStub(channel).ListRepositories(pb.ListRepositoriesRequest(limit=10), metadata=metadata, timeout=10)


def _code(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()


def _health(channel: grpc.Channel, service: str = "") -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def _wait_serving(channel: grpc.Channel) -> None:
    for _ in range(100):
        if _health(channel) == health_pb2.HealthCheckResponse.SERVING:
            return
        time.sleep(0.1)
    pytest.fail("the blobstore never said SERVING")


def _refused_count(berth: Berth) -> float:
    text = httpx.get(f"http://127.0.0.1:{berth.blobstore_http_port}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("berth_blobstore_rpc_refused_total{"))


# Token


@pytest.fixture(scope="module")
def token_berth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Berth]:
    berth = Berth(
        tmp_path_factory.mktemp("token"),
        env={"REGISTRY_BLOBSTORE_SECURITY": "token", "REGISTRY_BLOBSTORE_TOKEN": TOKEN},
    )
    berth.start()
    yield berth
    berth.stop()


def test_token_is_required_on_every_call(token_berth: Berth) -> None:
    before = _refused_count(token_berth)
    with grpc.insecure_channel(f"127.0.0.1:{token_berth.grpc_port}") as channel:
        stub = pb_grpc.BlobstoreStub(channel)
        assert _code(lambda: _list(channel)) is grpc.StatusCode.UNAUTHENTICATED
        assert _code(lambda: _list(channel, (("authorization", "Bearer wrong-token-wrong-token"),))) is grpc.StatusCode.UNAUTHENTICATED
        assert _code(lambda: _list(channel, (("authorization", TOKEN),))) is grpc.StatusCode.UNAUTHENTICATED  # no scheme
        assert _code(lambda: _list(channel, (("authorization", f"Bearer {TOKEN}x"),))) is grpc.StatusCode.UNAUTHENTICATED
        # Streams too, in both directions, and methods that do not exist.
        read = stub.ReadBlob(pb.ReadBlobRequest(repository="a/b", digest="sha256:" + "0" * 64), timeout=10)
        assert _code(lambda: list(read)) is grpc.StatusCode.UNAUTHENTICATED
        header = pb.WriteUploadRequest(header=pb.WriteUploadHeader(repository="a/b"))
        assert (
            _code(lambda: stub.WriteUpload(iter([header, pb.WriteUploadRequest(data=b"x")]), timeout=10)) is grpc.StatusCode.UNAUTHENTICATED
        )
        unknown = channel.unary_unary("/berth.blobstore.v1.Blobstore/NoSuchMethod", request_serializer=None, response_deserializer=None)
        assert _code(lambda: unknown(b"", timeout=10)) is grpc.StatusCode.UNAUTHENTICATED

        assert _list(channel, (("authorization", f"Bearer {TOKEN}"),)) is not None
        # Probes need no token (a Kubernetes grpc probe cannot send one) ...
        _wait_serving(channel)
        assert _health(channel, "berth.blobstore.v1.Blobstore") == health_pb2.HealthCheckResponse.SERVING
    assert _refused_count(token_berth) >= before + 7


def test_gateway_with_the_token_pushes_and_pulls(token_berth: Berth) -> None:
    data = os.urandom(300_000)
    with token_berth.client() as client:
        digest = push_blob(client, "secure/token", data)
        location = client.post("/v2/secure/token/blobs/uploads/").headers["location"]
        r = client.patch(location, content=data[:1000])
        assert r.status_code == 202, r.text
        r = client.put(f"{r.headers['location']}&digest={digest}", content=data[1000:])
        assert r.status_code == 201, r.text
        push_image(client, "secure/token", "v1")
        assert client.get(f"/v2/secure/token/blobs/{digest}").content == data
        assert client.get("/v2/secure/token/manifests/v1").status_code == 200
        assert "secure/token" in client.get("/v2/_catalog").json()["repositories"]


def test_gateway_with_a_wrong_token_gets_no_data(token_berth: Berth, tmp_path: Path) -> None:
    other = Berth(
        tmp_path,
        grpc_port=token_berth.grpc_port,
        env={"REGISTRY_BLOBSTORE_SECURITY": "token", "REGISTRY_BLOBSTORE_TOKEN": "not-the-blobstore-token"},
    )
    other.start("gateway")
    try:
        with other.client() as client:
            r = client.get("/v2/_catalog")
            assert r.status_code >= 500
            assert "secure" not in r.text
    finally:
        other.stop()


# Mutual TLS


def _mtls_env(pki: PKI) -> dict[str, str]:
    return {
        "REGISTRY_BLOBSTORE_SECURITY": "mtls",
        "REGISTRY_BLOBSTORE_TLS_CERTIFICATE": str(pki.server.cert),
        "REGISTRY_BLOBSTORE_TLS_KEY": str(pki.server.key),
        "REGISTRY_BLOBSTORE_TLS_CLIENTCA": str(pki.ca),
        "REGISTRY_BLOBSTORE_TLS_CLIENT_CERTIFICATE": str(pki.client.cert),
        "REGISTRY_BLOBSTORE_TLS_CLIENT_KEY": str(pki.client.key),
        "REGISTRY_BLOBSTORE_TLS_CA": str(pki.ca),
    }


@pytest.fixture(scope="module")
def mtls_berth(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Iterator[Berth]:
    berth = Berth(tmp_path_factory.mktemp("mtls"), env=_mtls_env(pki))
    berth.start()
    yield berth
    berth.stop()


def _tls_channel(port: int, ca: Path, client: Issued | None = None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=client.key.read_bytes() if client else None,
        certificate_chain=client.cert.read_bytes() if client else None,
    )
    return grpc.secure_channel(f"127.0.0.1:{port}", credentials)


def test_mtls_requires_a_client_certificate_from_the_configured_ca(mtls_berth: Berth, pki: PKI) -> None:
    port = mtls_berth.grpc_port
    with grpc.insecure_channel(f"127.0.0.1:{port}") as plain:
        assert _code(lambda: _list(plain)) is grpc.StatusCode.UNAVAILABLE
    with _tls_channel(port, pki.ca) as anonymous:
        assert _code(lambda: _list(anonymous)) is grpc.StatusCode.UNAVAILABLE
    with _tls_channel(port, pki.ca, pki.foreign_client) as foreign:
        assert _code(lambda: _list(foreign)) is grpc.StatusCode.UNAVAILABLE
    with _tls_channel(port, pki.ca, pki.client) as trusted:
        assert _list(trusted) is not None
        _wait_serving(trusted)


def test_gateway_with_a_client_certificate_pushes_and_pulls(mtls_berth: Berth) -> None:
    data = os.urandom(200_000)
    with mtls_berth.client() as client:
        digest = push_blob(client, "secure/mtls", data)
        push_image(client, "secure/mtls", "v1")
        assert client.get(f"/v2/secure/mtls/blobs/{digest}").content == data
        assert client.get("/v2/secure/mtls/manifests/v1").status_code == 200


def _settings_for(port: int, pki: PKI, **tls: str) -> BlobstoreSettings:
    fields = {
        "certificate": str(pki.server.cert),
        "key": str(pki.server.key),
        "clientca": str(pki.ca),
        "client_certificate": str(pki.client.cert),
        "client_key": str(pki.client.key),
        "ca": str(pki.ca),
        **tls,
    }
    return BlobstoreSettings(addr=f"127.0.0.1:{port}", security="mtls", call_timeout=3, tls=BlobstoreTLSSettings(**fields))


def test_gateway_client_checks_the_server_name(mtls_berth: Berth, pki: PKI) -> None:
    async def list_with(settings: BlobstoreSettings) -> list[str]:
        client = BlobstoreClient.from_settings(settings)
        try:
            return list((await client.list_repositories("", 10)).names)
        finally:
            await client.close()

    port = mtls_berth.grpc_port
    assert isinstance(asyncio.run(list_with(_settings_for(port, pki, servername="blobstore.internal"))), list)
    with pytest.raises(RegistryError) as caught:
        asyncio.run(list_with(_settings_for(port, pki, servername="someone.else")))
    assert caught.value.code is UNAVAILABLE


def test_gateway_client_names_an_unreadable_file(pki: PKI, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"blobstore\.tls\.client_key"):
        BlobstoreClient.from_settings(_settings_for(1, pki, client_key=str(tmp_path / "missing.pem")))


# Token over server-only TLS


def test_token_over_tls(tmp_path: Path, pki: PKI) -> None:
    berth = Berth(
        tmp_path,
        env={
            "REGISTRY_BLOBSTORE_SECURITY": "token",
            "REGISTRY_BLOBSTORE_TOKEN": TOKEN,
            "REGISTRY_BLOBSTORE_TLS_CERTIFICATE": str(pki.server.cert),
            "REGISTRY_BLOBSTORE_TLS_KEY": str(pki.server.key),
        },
    ).start("blobstore")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{berth.grpc_port}") as plain:
            assert _code(lambda: _list(plain, (("authorization", f"Bearer {TOKEN}"),))) is grpc.StatusCode.UNAVAILABLE
        with _tls_channel(berth.grpc_port, pki.ca) as tls:
            assert _code(lambda: _list(tls)) is grpc.StatusCode.UNAUTHENTICATED
            assert _list(tls, (("authorization", f"Bearer {TOKEN}"),)) is not None

        async def through_client(settings: BlobstoreSettings) -> list[str]:
            client = BlobstoreClient.from_settings(settings)
            try:
                return list((await client.list_repositories("", 10)).names)
            finally:
                await client.close()

        tls = BlobstoreTLSSettings(ca=str(pki.ca))
        explicit = BlobstoreSettings(addr=f"127.0.0.1:{berth.grpc_port}", security="token", token=TOKEN, tls=tls)
        assert asyncio.run(through_client(explicit)) == []
        # A gateway on defaults (security auto, its own addr loopback) reaching the blobstore
        # through target: the CA alone says the blobstore speaks TLS.
        auto = BlobstoreSettings(target=f"127.0.0.1:{berth.grpc_port}", token=TOKEN, tls=tls, call_timeout=5)
        assert asyncio.run(through_client(auto)) == []
    finally:
        berth.stop()


# Configurations that must not start


def _blobstore_exit(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    environment.update(
        REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=str(tmp_path / "data"),
        REGISTRY_BLOBSTORE_HTTP_ADDR="",
        **env,
    )
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "blobstore"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_auto_beyond_loopback_without_a_token_does_not_start(tmp_path: Path) -> None:
    done = _blobstore_exit(tmp_path, {"REGISTRY_BLOBSTORE_ADDR": "0.0.0.0:0"})
    assert done.returncode != 0
    assert "blobstore.token" in done.stderr


def test_missing_certificate_file_is_named(tmp_path: Path, pki: PKI) -> None:
    env = {**_mtls_env(pki), "REGISTRY_BLOBSTORE_ADDR": "127.0.0.1:0", "REGISTRY_BLOBSTORE_TLS_CLIENTCA": str(tmp_path / "nope.pem")}
    done = _blobstore_exit(tmp_path, env)
    assert done.returncode == 2, done.stderr
    assert "blobstore.tls.clientca" in done.stderr
    assert "Traceback" not in done.stderr
