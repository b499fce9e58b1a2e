"""The blobstore's health (issue 6) and its HTTP listener: gRPC health SERVING once the storage takes
a write and NOT_SERVING while it stops; /_ping, /_ready and /metrics on blobstore.http_addr."""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.rpc import blobstore_pb2 as pb
from services.common.rpc import blobstore_pb2_grpc as pb_grpc
from tests.support.processes import Berth
from tests.support.registry import push_blob

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE = "berth.blobstore.v1.Blobstore"


def _check(channel: grpc.Channel, service: str = "") -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def _http(berth: Berth, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{berth.blobstore_http_port}{path}", timeout=10)


def _sample(metrics: str, prefix: str) -> float:
    """The sum of the samples whose line starts with ``prefix`` (name and some labels)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(prefix))


@pytest.fixture()
def blobstore(tmp_path: Path) -> Iterator[Berth]:
    berth = Berth(tmp_path).start("blobstore")
    yield berth
    berth.stop()


def test_health_service_says_serving(blobstore: Berth) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{blobstore.grpc_port}") as channel:
        _wait_for(lambda: _check(channel) == SERVING, "SERVING")
        assert _check(channel, SERVICE) == SERVING
        with pytest.raises(grpc.RpcError) as caught:
            _check(channel, "no.such.Service")
        assert caught.value.code() is grpc.StatusCode.NOT_FOUND


def test_ping_and_ready(blobstore: Berth) -> None:
    ping = _http(blobstore, "/_ping")
    assert ping.status_code == 200
    ready = _http(blobstore, "/_ready")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"ready": True}
    assert _http(blobstore, "/nothing-here").status_code == 404
    # The probe leaves nothing behind, and nothing inside the registry's layout.
    probes = blobstore.data_dir / "_berth_probe"
    assert not probes.exists() or not any(probes.iterdir())


def test_other_methods_are_405_not_501(blobstore: Berth) -> None:
    # Found by tests/fuzz: the stdlib server answered 501 to any method but GET and HEAD.
    for method in ("POST", "DELETE", "OPTIONS", "FOO"):
        response = httpx.request(method, f"http://127.0.0.1:{blobstore.blobstore_http_port}/_ping", timeout=10)
        assert response.status_code == 405, (method, response.text)
        assert response.headers["allow"] == "GET, HEAD"
    assert _http(blobstore, "/_ping").status_code == 200


def test_not_ready_while_the_storage_refuses_writes(blobstore: Berth) -> None:
    root = blobstore.data_dir
    assert _http(blobstore, "/_ready").status_code == 200
    shutil.rmtree(root)
    root.write_bytes(b"not a directory")  # every write under the root now fails
    try:
        _wait_for(lambda: _http(blobstore, "/_ready").status_code == 503, "/_ready to fail")
        body = _http(blobstore, "/_ready").json()
        assert body["ready"] is False
        assert "storage" in body["reason"]
        assert _http(blobstore, "/_ping").status_code == 200  # alive all the same
    finally:
        root.unlink()
        root.mkdir()
    _wait_for(lambda: _http(blobstore, "/_ready").status_code == 200, "/_ready to recover")


def test_metrics_count_calls_and_uploads(tmp_path: Path) -> None:
    berth = Berth(tmp_path).start()
    try:
        with berth.client() as client:
            push_blob(client, "metrics/test", b"x" * 5000)  # one message: the unary write
            push_blob(client, "metrics/test", b"y" * (3 << 20))  # streamed
            assert client.get("/v2/_catalog").status_code == 200
        response = _http(berth, "/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        text = response.text
        assert _sample(text, 'berth_blobstore_rpc_duration_seconds_count{code="OK",method="WriteUploadUnary",side="server"}') >= 1
        assert _sample(text, 'berth_blobstore_rpc_duration_seconds_count{code="OK",method="WriteUpload",side="server"}') >= 1
        assert _sample(text, 'berth_blobstore_rpc_duration_seconds_count{code="OK",method="ListRepositories",side="server"}') >= 1
        assert _sample(text, "berth_upload_bytes_total ") >= 5000 + (3 << 20)
        assert _sample(text, "berth_upload_duration_seconds_count ") >= 1
        # A failed call keeps its code.
        with grpc.insecure_channel(f"127.0.0.1:{berth.grpc_port}") as channel, pytest.raises(grpc.RpcError):
            pb_grpc.BlobstoreStub(channel).StatBlob(pb.BlobRef(repository="metrics/test", digest="sha256:" + "1" * 64), timeout=10)
        text = _http(berth, "/metrics").text
        assert _sample(text, 'berth_blobstore_rpc_duration_seconds_count{code="NOT_FOUND",method="StatBlob",side="server"}') >= 1
    finally:
        berth.stop()


def test_not_serving_while_stopping_and_no_metrics_when_disabled(tmp_path: Path) -> None:
    berth = Berth(tmp_path, env={"REGISTRY_METRICS_ENABLED": "false"}).start("blobstore")
    try:
        assert _http(berth, "/metrics").status_code == 404
        with grpc.insecure_channel(f"127.0.0.1:{berth.grpc_port}") as channel:
            _wait_for(lambda: _check(channel) == SERVING, "SERVING")
            # A watch is a call in flight: the server keeps it open through its grace period and
            # tells it about the change.
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=30)
            assert next(watch).status == SERVING
            berth.procs["blobstore"].send_signal(signal.SIGTERM)
            assert next(watch).status == NOT_SERVING
            ready = _http(berth, "/_ready")
            assert ready.status_code == 503
            assert ready.json()["reason"] == "shutting down"
            watch.cancel()
        berth.procs["blobstore"].wait(timeout=15)
    finally:
        berth.stop()
