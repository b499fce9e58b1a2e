"""The pull-through cache against a real upstream: Debian's docker-registry (registry:2) on
loopback, with htpasswd auth (and one with token auth from our token service), images pushed into
it with skopeo and pulled through Berth with skopeo (docs/mirror.md)."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.auth.support import ISSUER, SERVICE, add_users, key_path, token_service
from tests.e2e.test_memory import PeakRSS
from tests.images import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    LayoutWriter,
    multi_arch_image,
    single_image,
)
from tests.support.goregistry import GoRegistry
from tests.support.processes import Berth
from tests.support.redis import start_redis

pytestmark = pytest.mark.skopeo

for tool in ("skopeo", "docker-registry"):
    if shutil.which(tool) is None:  # `make tools` installs them; a bare pytest run says what is missing
        pytest.fail(f"{tool} is not installed (make tools installs it)", pytrace=False)

USER, PASSWORD = "mirror", "mirror-password"
TAG_TTL = 3.0
TTL = 3.0


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)


def push_upstream(up: GoRegistry, image_ref: str, dest: str, creds: str = f"{USER}:{PASSWORD}") -> None:
    done = skopeo("copy", "--quiet", "--all", "--dest-tls-verify=false", "--dest-creds", creds, image_ref, f"docker://{up.host}/{dest}")
    assert done.returncode == 0, done.stderr


def pull(berth: Berth, ref: str, dest: Path) -> subprocess.CompletedProcess[str]:
    return skopeo("copy", "--quiet", "--all", "--src-tls-verify=false", f"docker://{berth.host}/{ref}", f"oci:{dest}:x")


def raw(berth: Berth, ref: str) -> bytes:
    done = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{berth.host}/{ref}"], capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layout_blobs(path: Path) -> set[str]:
    return {p.name for p in (path / "blobs" / "sha256").iterdir()}


def metric(berth: Berth, name: str) -> float:
    text = httpx.get(f"{berth.url}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith((name + "{", name + " ")))


def pull_at_once(urls: list[str]) -> list[str | BaseException]:
    """GETs every URL at the same time (a thread each, redirects followed): the sha256 digest of
    each body, or what went wrong."""
    results: list[str | BaseException] = []

    def fetch(url: str) -> None:
        try:
            h = hashlib.sha256()
            with httpx.stream("GET", url, timeout=120, follow_redirects=True) as r:
                assert r.status_code == 200, r.read()
                for chunk in r.iter_bytes(1 << 20):
                    h.update(chunk)
            results.append("sha256:" + h.hexdigest())
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            results.append(exc)

    threads = [threading.Thread(target=fetch, args=(url,)) for url in urls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GoRegistry]:
    up = GoRegistry(tmp_path_factory.mktemp("upstream"), users={USER: PASSWORD}).start()
    yield up
    up.stop()


def mirror_config(path: Path, upstreams: list[dict], **proxy: object) -> Path:
    path.write_text(yaml.safe_dump({"proxy": {"timeout": 3, "purge_interval": 1, "upstreams": upstreams, **proxy}}))
    return path


@pytest.fixture(scope="module")
def mirror(upstream: GoRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Berth]:
    """hub/ mirrors the upstream asking for tags on every pull; slow/ trusts a tag for TAG_TTL
    seconds; short/ forgets what was not pulled within TTL seconds. Everything else is local."""
    workdir = tmp_path_factory.mktemp("mirror")
    creds = {"remoteurl": upstream.url, "username": USER, "password": PASSWORD}
    config = mirror_config(
        workdir / "berth.yml",
        [
            {"prefix": "hub/", **creds},
            {"prefix": "slow/", "tag_ttl": TAG_TTL, **creds},
            {"prefix": "short/", "ttl": TTL, **creds},
        ],
    )
    berth = Berth(workdir, env={"DOCKER_REGISTRY_CONFIG": str(config)})
    berth.start()
    yield berth
    berth.stop()


def test_pulls_by_tag_and_digest_multi_arch_included_then_with_the_upstream_down(
    upstream: GoRegistry, mirror: Berth, tmp_path: Path
) -> None:
    single = single_image(tmp_path / "single", seed="mirror-single")
    multi = multi_arch_image(tmp_path / "multi", seed="mirror-multi")
    push_upstream(upstream, single.ref(), "team/app:v1")
    push_upstream(upstream, multi.ref(), "team/multi:v1")

    assert pull(mirror, "hub/team/app:v1", tmp_path / "a").returncode == 0
    assert layout_blobs(tmp_path / "a") == layout_blobs(tmp_path / "single")
    assert pull(mirror, "hub/team/multi:v1", tmp_path / "m").returncode == 0
    assert layout_blobs(tmp_path / "m") == layout_blobs(tmp_path / "multi")
    index = raw(mirror, "hub/team/multi:v1")
    assert sha256(index) == multi.manifest_digests[0]
    assert pull(mirror, f"hub/team/multi@{multi.manifest_digests[1]}", tmp_path / "child").returncode == 0
    assert pull(mirror, f"hub/team/app@{single.manifest_digests[0]}", tmp_path / "d").returncode == 0
    gets = upstream.requests("GET", "/blobs/")
    assert metric(mirror, "berth_mirror_upstream_bytes_total") > 0

    upstream.stop()
    try:
        stale = metric(mirror, "berth_mirror_stale_total")
        for ref in (
            "hub/team/app:v1",
            f"hub/team/app@{single.manifest_digests[0]}",
            "hub/team/multi:v1",
            f"hub/team/multi@{multi.manifest_digests[0]}",
        ):
            done = pull(mirror, ref, tmp_path / f"down-{ref.replace('/', '_').replace(':', '_').replace('@', '_')}")
            assert done.returncode == 0, (ref, done.stderr)
        assert sha256(raw(mirror, "hub/team/multi:v1")) == multi.manifest_digests[0]
        assert metric(mirror, "berth_mirror_stale_total") >= stale + 2
        assert "from the cache: the upstream failed" in mirror.log("gateway")
        # Uncached: a clear 503 well within the configured timeout, never a hang.
        started = time.monotonic()
        r = httpx.get(f"{mirror.url}/v2/hub/team/never/manifests/v1", timeout=30)
        assert r.status_code == 503 and r.json()["errors"][0]["code"] == "UNAVAILABLE", r.text
        assert "not cached" in r.json()["errors"][0]["message"]
        assert time.monotonic() - started < 5
    finally:
        upstream.start()
    assert upstream.requests("GET", "/blobs/") == gets  # the cached pulls never reached it


def test_a_moved_tag_is_seen_at_once_and_after_tag_ttl(upstream: GoRegistry, mirror: Berth, tmp_path: Path) -> None:
    first = single_image(tmp_path / "one", seed="moving-1")
    second = single_image(tmp_path / "two", seed="moving-2")
    push_upstream(upstream, first.ref(), "team/moving:latest")
    assert sha256(raw(mirror, "hub/team/moving:latest")) == first.manifest_digests[0]
    assert sha256(raw(mirror, "slow/team/moving:latest")) == first.manifest_digests[0]
    moved_at = time.monotonic()
    push_upstream(upstream, second.ref(), "team/moving:latest")

    assert sha256(raw(mirror, "hub/team/moving:latest")) == second.manifest_digests[0]  # tag_ttl 0: asks every time
    if time.monotonic() - moved_at < TAG_TTL - 1:
        assert sha256(raw(mirror, "slow/team/moving:latest")) == first.manifest_digests[0]  # still trusted
    time.sleep(TAG_TTL + 0.5)
    assert sha256(raw(mirror, "slow/team/moving:latest")) == second.manifest_digests[0]
    assert pull(mirror, "slow/team/moving:latest", tmp_path / "back").returncode == 0
    assert layout_blobs(tmp_path / "back") == layout_blobs(tmp_path / "two")


def test_ttl_expiry_removes_content_not_pulled_again(upstream: GoRegistry, mirror: Berth, tmp_path: Path) -> None:
    image = single_image(tmp_path / "img", seed="expiring")
    push_upstream(upstream, image.ref(), "team/expiring:v1")
    assert pull(mirror, "short/team/expiring:v1", tmp_path / "a").returncode == 0
    repo = mirror.data_dir / "docker/registry/v2/repositories/short/team/expiring"
    digest = image.manifest_digests[0].split(":")[1]
    revision = repo / "_manifests/revisions/sha256" / digest
    assert revision.exists() and any((repo / "_layers/sha256").iterdir())
    deadline = time.monotonic() + TTL + 10
    while revision.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not revision.exists(), "the manifest outlived its ttl"
    assert not (repo / "_manifests/tags/v1").exists()
    assert not any((repo / "_layers/sha256").iterdir())
    assert not any((repo / "_mirror/manifests").iterdir())
    # Pulled again: fetched again.
    assert pull(mirror, "short/team/expiring:v1", tmp_path / "b").returncode == 0
    assert revision.exists()


def test_pushes_under_a_mirrored_prefix_are_refused_and_local_pushes_work(mirror: Berth, tmp_path: Path) -> None:
    image = single_image(tmp_path / "img", seed="local")
    refused = skopeo("copy", "--quiet", "--dest-tls-verify=false", image.ref(), f"docker://{mirror.host}/hub/team/pushed:v1")
    assert refused.returncode != 0
    r = httpx.post(f"{mirror.url}/v2/hub/team/pushed/blobs/uploads/", timeout=10)
    assert r.status_code == 405 and r.json()["errors"][0]["code"] == "UNSUPPORTED"
    assert "pull-through cache" in r.json()["errors"][0]["message"]
    assert httpx.delete(f"{mirror.url}/v2/hub/team/app/manifests/v1", timeout=10).status_code == 405
    done = skopeo("copy", "--quiet", "--dest-tls-verify=false", image.ref(), f"docker://{mirror.host}/local/app:v1")
    assert done.returncode == 0, done.stderr
    assert sha256(raw(mirror, "local/app:v1")) == image.manifest_digests[0]
    # A local repository is never looked for upstream.
    assert httpx.get(f"{mirror.url}/v2/local/nothing/manifests/v1", timeout=10).status_code == 404


BIG = 200 << 20
CLIENTS = 8


def test_concurrent_pulls_of_one_uncached_blob_cause_one_upstream_download(upstream: GoRegistry, mirror: Berth, tmp_path: Path) -> None:
    # An image whose one layer is BIG random bytes in a gzip stream of stored (level 0) blocks, so
    # skopeo takes it for the compressed layer it claims to be and copies it as it is.
    layout = LayoutWriter(tmp_path / "big")
    rng = random.Random(20240601)
    hasher = hashlib.sha256()
    blob_file = tmp_path / "big.bin"
    packer = zlib.compressobj(0, zlib.DEFLATED, 31)
    with open(blob_file, "wb") as f:
        for piece in (*(packer.compress(rng.randbytes(1 << 20)) for _ in range(BIG >> 20)), packer.flush()):
            hasher.update(piece)
            f.write(piece)
    size = blob_file.stat().st_size
    digest = "sha256:" + hasher.hexdigest()
    blob_file.rename(tmp_path / "big" / "blobs" / "sha256" / digest.split(":")[1])
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [digest]}}).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": layout.blob(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": digest, "size": size}],
        }
    ).encode()
    layout.write_index({"mediaType": OCI_MANIFEST, "digest": layout.blob(manifest), "size": len(manifest)})
    push_upstream(upstream, f"oci:{tmp_path / 'big'}:latest", "team/big:v1")

    started = time.monotonic()
    with PeakRSS({"gateway": mirror.pid("gateway"), "blobstore": mirror.pid("blobstore")}) as rss:
        results = pull_at_once([f"{mirror.url}/v2/hub/team/big/blobs/{digest}"] * CLIENTS)
    elapsed = time.monotonic() - started
    assert results == [digest] * CLIENTS, results
    assert upstream.requests("GET", f"/blobs/{digest}", 200) == 1  # one download (after one 401 challenge)
    growth = rss.growth()
    print(f"{CLIENTS} clients, {BIG >> 20} MiB: {elapsed:.1f}s, peak RSS growth { ({k: v >> 20 for k, v in growth.items()}) } MiB")
    assert all(v < 128 << 20 for v in growth.values()), growth  # 8 x 200 MiB passed through
    # Stored: served locally from now on.
    r = httpx.head(f"{mirror.url}/v2/hub/team/big/blobs/{digest}", timeout=10)
    assert r.status_code == 200 and int(r.headers["content-length"]) == size


def test_classic_mirror_source_environment(upstream: GoRegistry, tmp_path: Path) -> None:
    image = single_image(tmp_path / "img", seed="classic-env")
    push_upstream(upstream, image.ref(), "library/classic:v1")
    berth = Berth(
        tmp_path / "berth",
        env={
            "MIRROR_SOURCE": upstream.url,
            "MIRROR_TAGS_CACHE_TTL": "60",
            "REGISTRY_PROXY_USERNAME": USER,
            "REGISTRY_PROXY_PASSWORD": PASSWORD,
        },
    )
    (tmp_path / "berth").mkdir()
    berth.start()
    try:
        assert pull(berth, "library/classic:v1", tmp_path / "back").returncode == 0
        assert layout_blobs(tmp_path / "back") == layout_blobs(tmp_path / "img")
        # registry:2's single remoteurl: every repository is mirrored, no pushes.
        assert httpx.post(f"{berth.url}/v2/anything/blobs/uploads/", timeout=10).status_code == 405
    finally:
        berth.stop()


def test_token_auth_upstream(tmp_path: Path) -> None:
    auth = token_service(tmp_path / "auth")
    add_users(auth, {"admin": ("admin-password", ["admins"])})
    auth.start("auth")
    up = GoRegistry(
        tmp_path / "up",
        token={
            "realm": f"{auth.auth_url}/token",
            "service": SERVICE,
            "issuer": ISSUER,
            "rootcertbundle": str(key_path(auth).with_suffix(".crt")),
        },
    ).start()
    config = mirror_config(
        tmp_path / "berth.yml", [{"prefix": "tok/", "remoteurl": up.url, "username": "admin", "password": "admin-password"}]
    )
    berth = Berth(tmp_path / "berth", env={"DOCKER_REGISTRY_CONFIG": str(config)})
    (tmp_path / "berth").mkdir()
    try:
        image = multi_arch_image(tmp_path / "img", seed="token-upstream")
        push_upstream(up, image.ref(), "team/tok:v1", creds="admin:admin-password")
        berth.start()
        assert pull(berth, "tok/team/tok:v1", tmp_path / "back").returncode == 0
        assert layout_blobs(tmp_path / "back") == layout_blobs(tmp_path / "img")
        assert sha256(raw(berth, "tok/team/tok:v1")) == image.manifest_digests[0]
        # The upstream challenged once per scope; every other request came with a cached token.
        assert up.requests("GET", "/v2/team/tok/", 200) + up.requests("HEAD", "/v2/team/tok/", 200) > 3
        assert up.requests("GET", "/v2/team/tok/", 401) + up.requests("HEAD", "/v2/team/tok/", 401) == 1
    finally:
        berth.stop()
        up.stop()
        auth.stop()


def test_replicas_sharing_redis_download_a_blob_once(upstream: GoRegistry, tmp_path: Path) -> None:
    """Two mirroring gateways (each with its blobstore) on one store and one Redis: clients of
    both ask for one uncached blob at once; one replica downloads it while holding the blob's
    lease, the other waits for it to be stored, and every client gets the blob."""
    data = random.Random(20261207).randbytes(64 << 20)
    digest = sha256(data)
    with httpx.Client(base_url=upstream.url, auth=(USER, PASSWORD), timeout=60) as up:
        started = up.post("/v2/team/shared/blobs/uploads/")
        assert started.status_code == 202, started.text
        location = started.headers["location"]
        done = up.put(location + ("&" if "?" in location else "?") + f"digest={digest}", content=data)
        assert done.status_code == 201, done.text
    redis = start_redis(tmp_path / "redis")
    config = mirror_config(tmp_path / "berth.yml", [{"prefix": "hub/", "remoteurl": upstream.url, "username": USER, "password": PASSWORD}])
    shared = {
        "DOCKER_REGISTRY_CONFIG": str(config),
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "shared-store"),
        **redis.env,
    }
    replicas = [Berth(tmp_path / name, env=dict(shared)) for name in ("one", "two")]
    try:
        for replica in replicas:
            replica.workdir.mkdir()
            replica.start()
        results = pull_at_once([f"{replicas[n % 2].url}/v2/hub/team/shared/blobs/{digest}" for n in range(CLIENTS)])
        assert results == [digest] * CLIENTS, results
        assert upstream.requests("GET", f"/blobs/{digest}", 200) == 1
        assert not redis.client().keys("berth:fetch1:*")  # the lease went with the fetch
    finally:
        for replica in replicas:
            replica.stop()
        redis.stop()


def test_the_redis_cache_never_answers_for_a_purged_manifest(upstream: GoRegistry, tmp_path: Path) -> None:
    """cache_lru in front of the store: the purge (in the blobstore) tells Redis nothing, so the
    gateway trusts a cached manifest of a mirrored repository only while its own pull record keeps
    it alive; after the purge, pulls by digest and by tag fetch and store it again, as without
    the cache, rather than being answered from Redis (mutable_ttl is 300 s here)."""
    redis = start_redis(tmp_path / "redis")
    image = single_image(tmp_path / "img", seed="cached-purge")
    push_upstream(upstream, image.ref(), "team/cachedpurge:v1")
    config = mirror_config(
        tmp_path / "berth.yml", [{"prefix": "short/", "ttl": TTL, "remoteurl": upstream.url, "username": USER, "password": PASSWORD}]
    )
    (tmp_path / "berth").mkdir()
    berth = Berth(tmp_path / "berth", env={"DOCKER_REGISTRY_CONFIG": str(config), **redis.env})
    berth.start()
    try:
        digest = image.manifest_digests[0]
        revision = (
            berth.data_dir / "docker/registry/v2/repositories/short/team/cachedpurge/_manifests/revisions/sha256" / digest.split(":")[1]
        )

        def get(reference: str) -> bytes:
            r = httpx.get(f"{berth.url}/v2/short/team/cachedpurge/manifests/{reference}", headers={"Accept": OCI_MANIFEST}, timeout=10)
            assert r.status_code == 200, r.text
            return r.content

        def purged() -> None:
            deadline = time.monotonic() + TTL + 10
            while revision.exists() and time.monotonic() < deadline:
                time.sleep(0.3)
            assert not revision.exists(), "the manifest outlived its ttl"

        for _ in range(3):  # fetched, then read from the store (filling Redis), then from Redis
            assert sha256(get("v1")) == digest
            assert sha256(get(digest)) == digest
        assert redis.client().keys("berth:c1:tag:short/team/cachedpurge:*"), "the cache was never filled"

        def stored_again(path: Path, what: str) -> None:
            """A fetched manifest is stored just after its client is answered."""
            deadline = time.monotonic() + 5
            while not path.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert path.exists(), f"answered from Redis: the purged {what} was not fetched again"

        purged()
        assert sha256(get(digest)) == digest
        stored_again(revision, "manifest")
        purged()
        assert sha256(get("v1")) == digest
        stored_again(revision, "tag")
        stored_again(revision.parents[2] / "tags/v1/current/link", "tag")
    finally:
        berth.stop()
        redis.stop()


def test_a_cached_tag_the_upstream_no_longer_has_is_served_stale_as_registry2_does(
    upstream: GoRegistry, mirror: Berth, tmp_path: Path
) -> None:
    """registry:2 serves its local copy whenever the upstream fails, a 404 included; Berth does too,
    counted and logged as stale (the pull is not recorded, so the tag goes at its ttl). What the
    upstream does not have and Berth never cached stays a 404."""
    image = single_image(tmp_path / "img", seed="deleted-upstream")
    push_upstream(upstream, image.ref(), "team/deleted:v1")
    digest = image.manifest_digests[0]
    assert sha256(raw(mirror, "hub/team/deleted:v1")) == digest
    gone = httpx.delete(f"{upstream.url}/v2/team/deleted/manifests/{digest}", auth=(USER, PASSWORD), timeout=10)
    assert gone.status_code == 202, gone.text
    assert httpx.head(f"{upstream.url}/v2/team/deleted/manifests/v1", auth=(USER, PASSWORD), timeout=10).status_code == 404

    stale = metric(mirror, "berth_mirror_stale_total")
    assert sha256(raw(mirror, "hub/team/deleted:v1")) == digest
    assert pull(mirror, "hub/team/deleted:v1", tmp_path / "back").returncode == 0
    assert metric(mirror, "berth_mirror_stale_total") >= stale + 2
    assert "the upstream no longer has the tag (404)" in mirror.log("gateway")
    r = httpx.get(f"{mirror.url}/v2/hub/team/deleted/manifests/never", timeout=10)
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN", r.text
