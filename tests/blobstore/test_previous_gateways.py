"""A blobstore of this release serves gateways of the previous one, so blobstores can be upgraded
first (docs/scale-out.md): those start every upload with StartUpload, a session in storage at once,
and name it without fresh_since afterwards."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import grpc
import pytest

from services.blobstore import server as blobstore_server
from services.common.config import Settings
from services.common.rpc import blobstore_pb2 as pb
from services.common.rpc import blobstore_pb2_grpc as pb_grpc
from tests.support.processes import free_port

DATA = b"pushed by a gateway of the previous release"
REPO = "previous/gateway"


@pytest.fixture()
def stub() -> Iterator[pb_grpc.BlobstoreStub]:
    settings = Settings.model_validate(
        {"storage": {"driver": "inmemory"}, "blobstore": {"addr": f"127.0.0.1:{free_port()}", "http_addr": ""}}
    )
    blobstore = blobstore_server.build(settings)
    blobstore.start()
    try:
        with grpc.insecure_channel(settings.blobstore.addr) as channel:
            yield pb_grpc.BlobstoreStub(channel)
    finally:
        blobstore.stop(grace=0)


def test_an_upload_started_the_old_way_is_stored_and_committed(stub: pb_grpc.BlobstoreStub) -> None:
    started = stub.StartUpload(pb.StartUploadRequest(repository=REPO), timeout=10)
    assert started.upload_id and started.size == 0
    assert stub.UploadStatus(pb.UploadRef(repository=REPO, upload_id=started.upload_id), timeout=10).size == 0
    digest = "sha256:" + hashlib.sha256(DATA).hexdigest()
    header = pb.WriteUploadHeader(repository=REPO, upload_id=started.upload_id, offset=0, commit_digest=digest, expected_length=len(DATA))
    written = stub.WriteUploadUnary(pb.WriteUploadUnaryRequest(header=header, data=DATA), timeout=10)
    assert written.digest == digest and written.size == len(DATA)
    assert stub.StatBlob(pb.BlobRef(repository=REPO, digest=digest), timeout=10).size == len(DATA)
    with pytest.raises(grpc.RpcError) as caught:
        stub.UploadStatus(pb.UploadRef(repository=REPO, upload_id=started.upload_id), timeout=10)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
