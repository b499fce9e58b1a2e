"""Tag overwrites, tag deletes, manifest deletes and tag reads racing on the same tags.

Two gateway+blobstore pairs share one store (a folder, an S3 bucket on moto), and every thread
alternates between them, so the races cross processes as they do between replicas. The run is
bounded by time; afterwards the store must be consistent: a tag is listed exactly when it resolves.

Witness threads check for lost updates: each owns a tag nobody else writes or deletes by name, pushes
it and reads it straight back. Only a DELETE by digest of what it pushed, overlapping that push and
read, may make the read a 404; any other answer than the pushed manifest is an update lost.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.images import sha256
from tests.support.processes import Berth
from tests.support.registry import image_manifest, push_blob
from tests.support.s3 import MotoServer

NAME = "race/app"
TAGS = ("latest", "stable")
DURATION = 10.0  # seconds of racing per store
WRITERS, TAG_DELETERS, DIGEST_DELETERS, READERS, WITNESSES = 16, 2, 2, 4, 2


@pytest.fixture(params=["filesystem", "s3"])
def berths(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[Berth]]:
    if request.param == "filesystem":
        shared = {"REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "shared-store")}
    else:
        moto: MotoServer = request.getfixturevalue("moto")
        shared = moto.berth_env(moto.new_bucket("tag-races"), rootdirectory="registry")
    pairs = [Berth(tmp_path / name, env=dict(shared)) for name in ("one", "two")]
    try:
        for berth in pairs:
            berth.workdir.mkdir()
            berth.start()
        yield pairs
    finally:
        for berth in pairs:
            berth.stop()


def _manifests(client: httpx.Client) -> dict[str, bytes]:
    """Three image manifests of the repository (blobs pushed, manifests not), by digest."""
    push_blob(client, NAME, b"the one layer")
    found = {}
    for n in range(3):
        config = json.dumps({"architecture": "amd64", "os": "linux", "n": n}).encode()
        push_blob(client, NAME, config)
        payload = json.dumps(image_manifest(config, [b"the one layer"])).encode()
        found[sha256(payload)] = payload
    return found


class Tally:
    """Every answer by kind; anything but a spec answer is kept for the failure message."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.wrong: list[str] = []
        # (start, end, digest) of every DELETE by digest that answered 202.
        self.digest_deletes: list[tuple[float, float, str]] = []

    def add(self, kind: str, response: httpx.Response, expected: bool) -> None:
        with self.lock:
            self.counts[f"{kind} {response.status_code}"] += 1
            if not expected:
                self.wrong.append(f"{kind} -> {response.status_code} {response.text[:300]}")


def _is_unknown(response: httpx.Response) -> bool:
    return response.status_code == 404 and [e["code"] for e in response.json()["errors"]] == ["MANIFEST_UNKNOWN"]


def test_tag_writes_deletes_and_reads_race_without_errors(berths: list[Berth]) -> None:
    with berths[0].client() as client:
        manifests = _manifests(client)
    digests = list(manifests)
    tally = Tally()
    deadline = time.monotonic() + DURATION

    def push(client: httpx.Client, tag: str, digest: str) -> httpx.Response:
        r = client.put(
            f"/v2/{NAME}/manifests/{tag}", content=manifests[digest], headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
        )
        tally.add("PUT tag", r, r.status_code == 201 and r.headers.get("docker-content-digest") == digest)
        return r

    def put(client: httpx.Client, rnd: random.Random) -> None:
        push(client, rnd.choice(TAGS), rnd.choice(digests))

    def delete_tag(client: httpx.Client, rnd: random.Random) -> None:
        r = client.delete(f"/v2/{NAME}/manifests/{rnd.choice(TAGS)}")
        tally.add("DELETE tag", r, r.status_code == 202 or _is_unknown(r))

    def delete_digest(client: httpx.Client, rnd: random.Random) -> None:
        digest = rnd.choice(digests)
        start = time.monotonic()
        r = client.delete(f"/v2/{NAME}/manifests/{digest}")
        if r.status_code == 202:
            with tally.lock:
                tally.digest_deletes.append((start, time.monotonic(), digest))
        tally.add("DELETE digest", r, r.status_code == 202 or _is_unknown(r))

    def get(client: httpx.Client, rnd: random.Random) -> None:
        r = client.get(f"/v2/{NAME}/manifests/{rnd.choice(TAGS)}")
        whole = r.status_code == 200 and manifests.get(r.headers.get("docker-content-digest", "")) == r.content
        tally.add("GET tag", r, whole or _is_unknown(r))

    witnessed: list[tuple[float, float, str]] = []  # (start of the push, end of the read, digest)

    def witness(client: httpx.Client, rnd: random.Random) -> None:
        tag, digest = f"witness-{threading.get_ident()}", rnd.choice(digests)
        start = time.monotonic()
        if push(client, tag, digest).status_code != 201:
            return
        r = client.get(f"/v2/{NAME}/manifests/{tag}")
        tally.add("GET witness", r, (r.status_code == 200 and r.content == manifests[digest]) or _is_unknown(r))
        if r.status_code == 404:
            with tally.lock:
                witnessed.append((start, time.monotonic(), digest))

    def run(seed: int, action: Callable[[httpx.Client, random.Random], None]) -> None:
        rnd = random.Random(seed)
        clients = [berth.client() for berth in berths]
        try:
            while time.monotonic() < deadline:
                action(clients[rnd.randrange(len(clients))], rnd)
        finally:
            for c in clients:
                c.close()

    actions = [put] * WRITERS + [delete_tag] * TAG_DELETERS + [delete_digest] * DIGEST_DELETERS + [get] * READERS + [witness] * WITNESSES
    threads = [threading.Thread(target=run, args=(seed, action)) for seed, action in enumerate(actions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    summary = dict(sorted(tally.counts.items()))
    assert not tally.wrong, f"{len(tally.wrong)} answers outside the spec, {summary}; first: {tally.wrong[:5]}"
    lost = [w for w in witnessed if not any(d == w[2] and s < w[1] and w[0] < e for s, e, d in tally.digest_deletes)]
    assert not lost, f"{len(lost)} of {len(witnessed)} witness reads lost the push just answered 201: {summary}"
    for kind in ("PUT tag 201", "DELETE tag 202", "DELETE digest 202", "GET tag 200", "GET tag 404"):
        assert tally.counts[kind], f"the race never produced {kind}: {summary}"

    # Quiet again: through either pair, a tag is listed exactly when it resolves.
    for berth in berths:
        with berth.client() as client:
            listed = set(client.get(f"/v2/{NAME}/tags/list").json()["tags"] or ())
            resolving = {tag for tag in TAGS + tuple(listed) if client.get(f"/v2/{NAME}/manifests/{tag}").status_code == 200}
            assert listed == resolving, summary
