"""Chunked uploads on S3 outlive the blobstore process: each chunk is appended by a new process to
the multipart upload the previous ones left, and nothing of the upload stays behind once it is
committed or cancelled."""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import Berth
from tests.support.s3 import MotoServer

MiB = 1 << 20


@pytest.fixture()
def s3_berth(tmp_path: Path, moto: MotoServer) -> Iterator[tuple[Berth, str]]:
    bucket = moto.new_bucket("uploads")
    env = {**moto.berth_env(bucket), "REGISTRY_STORAGE_S3_CHUNKSIZE": str(5 * MiB)}
    instance = Berth(tmp_path, env=env)
    instance.start()
    yield instance, bucket
    instance.stop()


def test_chunks_appended_by_restarted_blobstores_make_one_blob(s3_berth: tuple[Berth, str], moto: MotoServer) -> None:
    berth, bucket = s3_berth
    data = random.Random(5).randbytes(13 * MiB + 1234)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    cuts = [0, 6 * MiB, 6 * MiB + 100, 12 * MiB, len(data)]
    s3 = moto.client()
    with berth.client() as client:
        location = client.post("/v2/s3/chunks/blobs/uploads/").headers["location"]
        for start, end in itertools.pairwise(cuts[:-1]):
            r = client.patch(location, content=data[start:end], headers={"Content-Range": f"{start}-{end - 1}"})
            assert r.status_code == 202, r.text
            location = r.headers["location"]
            berth.stop("blobstore")
            berth.start("blobstore")
            assert client.get(location).headers["range"] == f"0-{end - 1}"
        assert len(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == 1

        r = client.put(f"{location}&digest={digest}", content=data[cuts[-2] :])
        assert r.status_code == 201, r.text
        assert hashlib.sha256(client.get(f"/v2/s3/chunks/blobs/{digest}").content).hexdigest() == digest.split(":")[1]

    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    left = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    # Only the ended session's marker (services/blobstore/uploads.py), which upload purging removes.
    upload_id = location.split("/uploads/")[1].split("?")[0]
    assert [k for k in left if "/_uploads/" in k] == [f"docker/registry/v2/repositories/s3/chunks/_uploads/{upload_id}.ended"]


def test_cancelled_upload_leaves_no_parts(s3_berth: tuple[Berth, str], moto: MotoServer) -> None:
    berth, bucket = s3_berth
    with berth.client() as client:
        location = client.post("/v2/s3/cancel/blobs/uploads/").headers["location"]
        r = client.patch(location, content=random.Random(6).randbytes(7 * MiB), headers={"Content-Range": f"0-{7 * MiB - 1}"})
        assert r.status_code == 202
        assert len(moto.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == 1
        assert client.delete(r.headers["location"]).status_code == 204
    assert moto.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
