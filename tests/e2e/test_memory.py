"""Streams are streamed: pushing and pulling a 1 GiB layer keeps every process's memory bounded."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator

import psutil
import pytest

from tests.support.processes import Berth

pytestmark = pytest.mark.slow

GIB = 1 << 30
BLOCK = 1 << 20
# Headroom over the resting size; a buffered 1 GiB body would blow through it many times over.
ALLOWED_GROWTH = 96 << 20


class PeakRSS:
    """Samples the resident memory of some processes in the background."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.base = {name: p.memory_info().rss for name, p in self.procs.items()}
        self.peak = dict(self.base)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for name, proc in self.procs.items():
                self.peak[name] = max(self.peak[name], proc.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def growth(self) -> dict[str, int]:
        return {name: self.peak[name] - self.base[name] for name in self.procs}


def test_one_gib_layer_streams_with_bounded_memory(fresh_berth: Berth) -> None:
    fresh_berth.start()
    block = os.urandom(BLOCK)
    pushed = hashlib.sha256()

    def body() -> Iterator[bytes]:
        for i in range(GIB // BLOCK):
            chunk = i.to_bytes(8, "big") + block[8:]  # every block differs
            pushed.update(chunk)
            yield chunk

    with fresh_berth.client() as client:
        # Warm both processes so their resting size includes imported code and pools.
        client.get("/v2/")
        with PeakRSS({"gateway": fresh_berth.pid("gateway"), "blobstore": fresh_berth.pid("blobstore")}) as push_rss:
            location = client.post("/v2/big/layer/blobs/uploads/").headers["location"]
            r = client.patch(location, content=body())
            assert r.status_code == 202, r.text
            assert r.headers["range"] == f"0-{GIB - 1}"
            digest = "sha256:" + pushed.hexdigest()
            r = client.put(f"{r.headers['location']}&digest={digest}")
            assert r.status_code == 201, r.text

        pulled = hashlib.sha256()
        received = 0
        with (
            PeakRSS({"gateway": fresh_berth.pid("gateway"), "blobstore": fresh_berth.pid("blobstore")}) as pull_rss,
            client.stream("GET", f"/v2/big/layer/blobs/{digest}") as r,
        ):
            assert r.status_code == 200
            assert int(r.headers["content-length"]) == GIB
            for chunk in r.iter_bytes():
                pulled.update(chunk)
                received += len(chunk)

    assert received == GIB
    assert "sha256:" + pulled.hexdigest() == digest
    for phase, rss in (("push", push_rss), ("pull", pull_rss)):
        for name, growth in rss.growth().items():
            print(f"{phase} {name}: peak RSS grew {growth / 2**20:.1f} MiB")
            assert growth < ALLOWED_GROWTH, f"{name} grew {growth / 2**20:.0f} MiB during the {phase}"
