"""Manifest and tag writes run under the repository's storage lock; reads never wait for it.

The lock is what makes racing pushes and deletes of a tag take effect one at a time (see
``manifests._serialized``); tests/e2e/test_tag_races.py races them through real processes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.blobstore import layout
from services.blobstore.blobs import Blobs
from services.blobstore.drivers import create
from services.blobstore.manifests import Manifests

NAME = "locked/app"
PAYLOAD = b'{"schemaVersion": 2}'
DIGEST = "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()

WRITES: dict[str, Callable[[Manifests], object]] = {
    "put": lambda m: m.put(NAME, DIGEST, PAYLOAD),
    "delete": lambda m: m.delete(NAME, DIGEST),
    "delete_tag": lambda m: m.delete_tag(NAME, "latest"),
}


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
def test_a_write_waits_for_the_repository_lock_and_reads_do_not(write: Callable[[Manifests], object]) -> None:
    driver = create("inmemory", {})
    manifests = Manifests(driver, Blobs(driver))

    def pushed() -> None:
        manifests.put(NAME, DIGEST, PAYLOAD)
        driver.put_content(layout.tag_current_link(NAME, "latest"), DIGEST.encode())

    with ThreadPoolExecutor(1) as pool:
        pushed()
        with driver.lock(layout.repository(NAME)):
            pending = pool.submit(write, manifests)
            with pytest.raises(TimeoutError):
                pending.result(timeout=0.3)
            assert manifests.get(NAME, "latest").payload == PAYLOAD
            assert manifests.tags(NAME) == ["latest"]
        pending.result(timeout=10)
    # Another repository's lock is another lock.
    pushed()
    with driver.lock(layout.repository("other/app")):
        write(manifests)
