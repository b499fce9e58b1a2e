"""Upload purging (storage.maintenance.uploadpurging) on the filesystem and S3 (moto) drivers:
stale sessions go whole, fresh ones stay, crash leftovers go, dryrun removes nothing, and a purged
upload's URL answers 404 BLOB_UPLOAD_UNKNOWN through a running registry."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.blobstore import layout
from services.blobstore.blobs import Blobs
from services.blobstore.drivers import StorageDriver, create
from services.blobstore.purging import purge_uploads
from services.blobstore.uploads import Uploads
from tests.support.processes import Berth
from tests.support.registry import assert_error, start_upload
from tests.support.s3 import MotoServer

MiB = 1 << 20


@pytest.fixture(params=["filesystem", "s3"])
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageDriver]:
    if request.param == "filesystem":
        yield create("filesystem", {"rootdirectory": str(tmp_path / "root")})
    else:
        moto: MotoServer = request.getfixturevalue("moto")
        yield create("s3", moto.driver_parameters(moto.new_bucket("purge"), rootdirectory="reg"))


def everything(driver: StorageDriver) -> list[str]:
    """Every file the store holds, and on S3 every multipart upload in progress."""
    files = [i.path for i in driver.walk("/") if not i.is_dir]
    if driver.name == "s3":
        s3: Any = driver
        files += [u["Key"] for u in s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", ())]
    else:
        root: Path = driver.root  # type: ignore[attr-defined]
        files += [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".berth-locks~" not in p.parts]
    return files


def stale_upload(uploads: Uploads, repository: str, size: int) -> str:
    info = uploads.start(repository)
    uploads.write(repository, info.upload_id, 0, [b"x" * size])
    return info.upload_id


def test_the_marks_of_ended_sessions_and_dead_stagings_go_with_their_age(driver: StorageDriver) -> None:
    """Committed and cancelled sessions leave a marker (services/blobstore/uploads.py), and a
    process killed while it stored a whole blob leaves its staging file: purged by age as sessions
    are, and until then kept."""
    uploads = Uploads(driver, Blobs(driver))
    driver.put_content(layout.upload_staging("purge/a", str(uuid.uuid4())), b"half a blob")
    committed = stale_upload(uploads, "purge/a", 10)
    uploads.commit("purge/a", committed, "sha256:" + hashlib.sha256(b"x" * 10).hexdigest())
    cancelled = stale_upload(uploads, "purge/a", 10)
    uploads.cancel("purge/a", cancelled)
    left = sorted({f.rsplit("/", 1)[1] for f in everything(driver) if "_uploads" in f})
    assert [name for name in left if name.endswith(".ended")] == sorted(
        layout.upload_ended("purge/a", u).rsplit("/", 1)[1] for u in (committed, cancelled)
    )
    assert len(left) == 3
    assert purge_uploads(uploads, age=3600).temporary == []  # young: kept
    assert sorted({f.rsplit("/", 1)[1] for f in everything(driver) if "_uploads" in f}) == left
    report = purge_uploads(uploads, age=3600, now=time.time() + 7200, sessions=False)  # as with purging off
    assert report.uploads == [] and sorted(p.rsplit("/", 1)[1] for p in report.temporary) == left
    assert [f for f in everything(driver) if "_uploads" in f] == []


def test_stale_uploads_go_whole_and_fresh_ones_stay(driver: StorageDriver) -> None:
    uploads = Uploads(driver, Blobs(driver))
    # 6 MiB on S3 is a multipart upload with a part sent and a marker holding the tail.
    old = [stale_upload(uploads, "purge/a", 6 * MiB), stale_upload(uploads, "purge/b/c", 10)]
    assert any("_uploads" in f for f in everything(driver))

    report = purge_uploads(uploads, age=3600, now=time.time() + 7200)
    assert sorted(report.uploads) == sorted([f"purge/a/{old[0]}", f"purge/b/c/{old[1]}"])
    assert [f for f in everything(driver) if "_uploads" in f] == []
    for repository, upload_id in (("purge/a", old[0]), ("purge/b/c", old[1])):
        with pytest.raises(Exception, match=r"BLOB_UPLOAD_UNKNOWN|upload"):
            uploads.status(repository, upload_id)

    fresh = stale_upload(uploads, "purge/a", 10)
    report = purge_uploads(uploads, age=3600)
    assert report.uploads == [] and report.kept == 1
    assert uploads.status("purge/a", fresh).size == 10


def test_dryrun_removes_nothing(driver: StorageDriver) -> None:
    uploads = Uploads(driver, Blobs(driver))
    upload_id = stale_upload(uploads, "purge/dry", 6 * MiB)
    before = sorted(everything(driver))
    report = purge_uploads(uploads, age=60, dryrun=True, now=time.time() + 3600)
    assert report.uploads == [f"purge/dry/{upload_id}"]
    assert sorted(everything(driver)) == before
    assert uploads.status("purge/dry", upload_id).size == 6 * MiB


def test_crash_leftovers_are_removed_once_old(driver: StorageDriver) -> None:
    uploads = Uploads(driver, Blobs(driver))
    digest = "sha256:" + "ab" * 32
    if driver.name == "filesystem":
        root: Path = driver.root  # type: ignore[attr-defined]
        folder = root / layout.blob_data(digest).lstrip("/")
        folder.parent.mkdir(parents=True)
        old, new = folder.parent / ".berth-tmp~dead", folder.parent / ".berth-tmp~live"
        old.write_bytes(b"half")
        new.write_bytes(b"half")
        os.utime(old, (time.time() - 7200, time.time() - 7200))
        report = purge_uploads(uploads, age=3600)
        assert report.temporary == [str(old.relative_to(root)).join(["/", ""])]
        assert not old.exists() and new.exists()
    else:
        s3: Any = driver
        key = s3._key(layout.blob_data(digest))
        s3.client.create_multipart_upload(Bucket=s3.bucket, Key=key)  # a copy that died
        assert everything(driver) == [key]
        # (moto reports a fixed Initiated date in 2010, so "too young" cannot be shown here.)
        report = purge_uploads(uploads, age=3600, now=time.time() + 7200)
        assert len(report.temporary) == 1 and key in report.temporary[0]
        assert everything(driver) == []


@pytest.mark.parametrize("storage", ["filesystem", "s3"])
def test_a_purged_upload_answers_404(storage: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    env = {
        "REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE": "1s",
        "REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_INTERVAL": "1s",
    }
    if storage == "s3":
        moto: MotoServer = request.getfixturevalue("moto")
        env.update(moto.berth_env(moto.new_bucket("purge-e2e"), rootdirectory="reg"))
    berth = Berth(tmp_path, env=env).start()
    try:
        with berth.client() as client:
            location = start_upload(client, "purge/e2e")
            r = client.patch(location, content=b"some bytes", headers={"Content-Type": "application/octet-stream"})
            assert r.status_code == 202, r.text
            location = r.headers["location"]
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                r = client.get(location)
                if r.status_code == 404:
                    break
                assert r.status_code == 204, r.text
                time.sleep(0.3)
            assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")
            r = client.patch(location, content=b"more", headers={"Content-Type": "application/octet-stream"})
            assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")
        if storage == "filesystem":
            assert not list(berth.data_dir.rglob("_uploads/*"))
    finally:
        berth.stop()
