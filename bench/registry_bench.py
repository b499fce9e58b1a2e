#!/usr/bin/env python3
"""Measure the same OCI Distribution workloads against several registries.

Why this exists: Berth has to be judged against the reference Go registry
(distribution, "registry:2") on identical work, so every figure here comes
from plain Distribution-API HTTP calls that any conforming registry answers,
and every target is driven by the same client code in the same way.

Workloads (each one is timed separately; set-up and verification of what was
pushed are kept out of the timed sections where they are not part of the
operation itself):

1. large layer: one random blob (default 256 MiB) pushed as a chunked upload
   (POST, PATCH chunks with Content-Range, PUT ?digest=), streamed from a
   generator so client memory stays bounded; then pulled with a streaming GET
   whose sha256 is checked on the fly (hashing is part of the pull timing,
   as it is for a real client).
2. small images: N images, each a config blob, one small layer and an OCI
   image manifest, pushed with monolithic uploads and pulled back
   (manifest GET + blob GETs, all verified), one image after the other.
3. request rate: C concurrent connections doing manifest GET by tag, then
   blob HEAD, each for a fixed duration or request count (whichever ends
   first); requests/s plus p50/p99 latency.

Everything is repeated for --rounds rounds (default 3) with the targets
interleaved; the table shows medians, the ±spread over the rounds, and marks
ratios whose targets' ranges overlap, because on a small shared machine a
registry measured against itself scatters by tens of percent.

Ratios are always "speed of target relative to the reference": above 1.00x
means the target is faster.  For latency rows that is reference latency
divided by target latency, so the direction never flips.

Usage:
    registry_bench.py --target berth=http://127.0.0.1:5000 \
                      --target registry2=http://127.0.0.1:5001 \
                      [--reference registry2] [--large-mb 256] [--small-count 200]
                      [--duration 5] [--concurrency 16] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urljoin

import httpx

try:  # `python -m bench.registry_bench` / `from bench import registry_bench`
    from bench import wrk
except ImportError:  # `python bench/registry_bench.py`
    import wrk  # type: ignore[no-redef, import-not-found]

MiB = 1 << 20
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCTET = "application/octet-stream"

# Pieces the large-blob generator yields; small enough to keep memory flat,
# large enough that per-piece Python overhead is negligible.
PIECE = 1 * MiB
# Every piece starts at a different offset into the random pool, so the
# blob is not one block repeated (a registry must not get a free ride from
# compression or dedup below blob level).
POOL_SLACK = 64 * 1024

WORKLOAD_NAMES = ("large", "small", "rate")
UPLOAD_MODES = ("auto", "single-post", "post-put")


class BenchError(Exception):
    """A registry answered something the Distribution spec does not allow."""


# --------------------------------------------------------------------------
# Settings, metrics, results
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Everything that shapes the workloads; identical for every target."""

    large_mb: float = 256
    chunk_mb: float = 16
    small_count: int = 200
    small_layer_kb: float = 4
    duration: float = 5.0
    requests: int = 0
    concurrency: int = 16
    processes: int = 1
    upload_mode: str = "auto"
    timeout: float = 120.0
    cleanup: bool = True
    workloads: tuple[str, ...] = WORKLOAD_NAMES
    rounds: int = 3


@dataclass(frozen=True)
class Target:
    """One registry under test, by the label used in the table."""

    label: str
    url: str


@dataclass(frozen=True)
class Metric:
    """One table row; `higher_is_better` decides how the ratio is taken."""

    key: str
    workload: str
    title: str
    unit: str
    higher_is_better: bool


@dataclass
class TargetResult:
    """Figures, per-workload errors and remarks for one target.

    After merging rounds, `values` holds medians and `samples` every
    round's figure, so the noise of the machine stays visible.
    """

    values: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    samples: dict[str, list[float]] = field(default_factory=dict)

    def spread(self, key: str) -> float | None:
        """Half the min-max range over rounds, relative to the median."""
        vals = self.samples.get(key, [])
        med = self.values.get(key)
        if len(vals) < 2 or not med:
            return None
        return (max(vals) - min(vals)) / 2 / med


def metrics_for(s: Settings) -> list[Metric]:
    """Rows of the table, titled with the sizes actually used."""
    small = f"{s.small_count} imgs, {s.small_layer_kb:g} KiB layer"
    bound = f"{s.duration:g}s" + (f"/{s.requests} req" if s.requests else "")
    rate = f"c={s.concurrency}, {bound}"
    rows = [
        Metric("large_push", "large", f"large push ({s.large_mb:g} MiB, {s.chunk_mb:g} MiB chunks)", "MiB/s", True),
        Metric("large_pull", "large", f"large pull ({s.large_mb:g} MiB, sha256 checked)", "MiB/s", True),
        Metric("small_push", "small", f"small push ({small})", "img/s", True),
        Metric("small_pull", "small", f"small pull ({small})", "img/s", True),
    ]
    for key, name in (("manifest_get", "manifest GET"), ("blob_head", "blob HEAD")):
        rows += [
            Metric(f"{key}_rps", "rate", f"{name} rate ({rate})", "req/s", True),
            Metric(f"{key}_p50", "rate", f"{name} p50 latency", "ms", False),
            Metric(f"{key}_p99", "rate", f"{name} p99 latency", "ms", False),
        ]
    return [m for m in rows if m.workload in s.workloads]


@dataclass
class RunContext:
    """What every workload needs for one round against one target."""

    client: httpx.Client
    target: Target
    settings: Settings
    run_id: str
    result: TargetResult
    trash: Trash

    @property
    def base(self) -> str:
        return self.target.url


# --------------------------------------------------------------------------
# HTTP helpers
# --------------------------------------------------------------------------


def make_client(s: Settings) -> httpx.Client:
    """Sync client for the sequential workloads.

    trust_env=False so proxy variables of the machine never reroute loopback
    traffic; redirects are followed because registries may send blob GETs
    to storage elsewhere.
    """
    return httpx.Client(
        timeout=httpx.Timeout(s.timeout, connect=10.0),
        follow_redirects=True,
        trust_env=False,
    )


def expect(resp: httpx.Response, *codes: int, what: str) -> None:
    """Fail with the status and a bit of the body, which is what one needs
    to tell a missing feature from a broken one."""
    if resp.status_code in codes:
        return
    try:
        body = " ".join(resp.read()[:400].decode("utf-8", "replace").split())[:160]
    except httpx.HTTPError:
        body = "<unreadable>"
    raise BenchError(f"{what}: HTTP {resp.status_code} (wanted {codes}) {body!r}")


def location(resp: httpx.Response, base: str) -> str:
    """Absolute upload URL; the spec lets registries answer a relative one."""
    loc: str | None = resp.headers.get("Location")
    if not loc:
        raise BenchError(f"{resp.request.method} {resp.request.url}: no Location header")
    return urljoin(base + "/", loc)


def with_digest(url: str, digest: str) -> httpx.URL:
    """Add ?digest= while keeping the registry's own state parameters."""
    return httpx.URL(url).copy_merge_params({"digest": digest})


def sha256_digest(data: bytes) -> str:
    """OCI digest string of a byte string."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_reachable(client: httpx.Client, base: str) -> None:
    """GET /v2/ first, so a dead target gives one clear error, not nine."""
    resp = client.get(f"{base}/v2/")
    expect(resp, 200, 401, what="GET /v2/")
    if resp.status_code == 401:
        raise BenchError("GET /v2/ wants authentication; this benchmark sends none")


# --------------------------------------------------------------------------
# Workload 1: one large layer
# --------------------------------------------------------------------------


class RandomBlob:
    """Pseudo-random content of any size from a ~1 MiB random pool.

    Why: generating 256 MiB with os.urandom while timing would measure the
    client's RNG, and holding it in memory defeats "bounded memory".  Piece k
    is the pool read from a k-dependent offset, so content can be produced
    again (for the digest pre-pass) without storing it.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._pool = os.urandom(PIECE + POOL_SLACK)
        self._digest: str | None = None

    def _offset(self, piece: int) -> int:
        return (piece * 7919) % POOL_SLACK

    def pieces(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Bytes [start, end) of the blob, yielded at most PIECE at a time."""
        end = self.size if end is None else end
        pos = start
        while pos < end:
            k, within = divmod(pos, PIECE)
            n = min(PIECE - within, end - pos)
            off = self._offset(k) + within
            yield self._pool[off : off + n]
            pos += n

    @property
    def digest(self) -> str:
        """sha256 of the whole blob, computed once outside any timing."""
        if self._digest is None:
            h = hashlib.sha256()
            for part in self.pieces():
                h.update(part)
            self._digest = "sha256:" + h.hexdigest()
        return self._digest


def push_chunked(client: httpx.Client, base: str, repo: str, blob: RandomBlob, chunk: int) -> None:
    """POST, then PATCH each chunk (Content-Range, explicit Content-Length
    so no chunked transfer encoding is needed), then PUT ?digest=."""
    resp = client.post(f"{base}/v2/{repo}/blobs/uploads/", content=b"")
    expect(resp, 202, what="POST blob upload")
    url = location(resp, base)
    for start in range(0, blob.size, chunk):
        end = min(start + chunk, blob.size)
        headers = {
            "Content-Type": OCTET,
            "Content-Length": str(end - start),
            "Content-Range": f"{start}-{end - 1}",
        }
        resp = client.patch(url, content=blob.pieces(start, end), headers=headers)
        expect(resp, 202, what=f"PATCH chunk {start}-{end - 1}")
        url = location(resp, base)
    resp = client.put(with_digest(url, blob.digest), content=b"")
    expect(resp, 201, what="PUT ?digest= (close upload)")


def head_blob_size(client: httpx.Client, base: str, repo: str, digest: str) -> int:
    """Size the registry reports for a blob; checks the push really landed."""
    resp = client.head(f"{base}/v2/{repo}/blobs/{digest}")
    expect(resp, 200, what="HEAD blob")
    return int(resp.headers.get("Content-Length", "-1"))


def pull_verified(client: httpx.Client, base: str, repo: str, digest: str, size: int) -> None:
    """Streaming GET with sha256 on the fly, so memory stays bounded."""
    h = hashlib.sha256()
    got = 0
    with client.stream("GET", f"{base}/v2/{repo}/blobs/{digest}") as resp:
        expect(resp, 200, what="GET blob")
        for part in resp.iter_bytes():
            h.update(part)
            got += len(part)
    if got != size or "sha256:" + h.hexdigest() != digest:
        raise BenchError(f"pulled blob differs: {got} bytes, sha256:{h.hexdigest()}")


def bench_large(ctx: RunContext) -> dict[str, float]:
    """Workload 1: MiB/s for a chunked push and a streaming pull."""
    s = ctx.settings
    repo = f"bench/large-{ctx.run_id}"
    blob = RandomBlob(int(s.large_mb * MiB))
    digest = blob.digest
    ctx.trash.blobs.append((repo, digest))  # before pushing: a half-done push is cleaned up too
    t0 = time.perf_counter()
    push_chunked(ctx.client, ctx.base, repo, blob, max(1, int(s.chunk_mb * MiB)))
    push_s = time.perf_counter() - t0
    size = head_blob_size(ctx.client, ctx.base, repo, digest)
    if size != blob.size:
        raise BenchError(f"HEAD says {size} bytes, pushed {blob.size}")
    t0 = time.perf_counter()
    pull_verified(ctx.client, ctx.base, repo, digest, blob.size)
    pull_s = time.perf_counter() - t0
    mib = blob.size / MiB
    return {"large_push": mib / push_s, "large_pull": mib / pull_s}


# --------------------------------------------------------------------------
# Workload 2: many small images
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class SmallImage:
    """A complete tiny image, built before timing starts."""

    tag: str
    config: bytes
    layer: bytes
    manifest: bytes

    @property
    def blobs(self) -> tuple[bytes, bytes]:
        return (self.config, self.layer)


def make_small_image(tag: str, run_id: str, layer_size: int) -> SmallImage:
    """Config + one random layer + OCI manifest; random so no two images
    (or runs) share blobs, which would let a registry skip work."""
    layer = os.urandom(layer_size)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"bench.run": run_id, "bench.tag": tag}},
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer)]},
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": sha256_digest(layer), "size": len(layer)}],
        },
        sort_keys=True,
    ).encode()
    return SmallImage(tag=tag, config=config, layer=layer, manifest=manifest)


def upload_single_post(client: httpx.Client, base: str, repo: str, data: bytes, digest: str) -> bool:
    """POST ?digest= with the body.  Returns False when the registry does not
    do single-POST uploads (it answers 202 and ignores the body), after
    finishing that upload with a PUT so nothing is left dangling."""
    headers = {"Content-Type": OCTET}
    resp = client.post(f"{base}/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data, headers=headers)
    if resp.status_code == 201:
        return True
    expect(resp, 202, what="POST ?digest= blob upload")
    resp = client.put(with_digest(location(resp, base), digest), content=data, headers=headers)
    expect(resp, 201, what="PUT ?digest= after POST")
    return False


def upload_post_put(client: httpx.Client, base: str, repo: str, data: bytes, digest: str) -> None:
    """Monolithic upload every registry supports: empty POST, PUT ?digest=."""
    resp = client.post(f"{base}/v2/{repo}/blobs/uploads/", content=b"")
    expect(resp, 202, what="POST blob upload")
    resp = client.put(with_digest(location(resp, base), digest), content=data, headers={"Content-Type": OCTET})
    expect(resp, 201, what="PUT ?digest= blob")


def detect_upload_mode(client: httpx.Client, base: str, repo: str, run_id: str, trash: Trash) -> str:
    """With --upload-mode auto, try one untimed single POST ?digest=; use it
    if the registry supports it (201), else fall back to POST + PUT, as real
    clients do.  So each registry is timed on its best conforming path."""
    probe = f"upload-mode probe {run_id} {uuid.uuid4()}".encode()
    digest = sha256_digest(probe)
    trash.blobs.append((repo, digest))
    return "single-post" if upload_single_post(client, base, repo, probe, digest) else "post-put"


def upload_blob(client: httpx.Client, base: str, repo: str, data: bytes, mode: str) -> None:
    """Monolithic upload in the mode chosen for this target."""
    digest = sha256_digest(data)
    if mode == "single-post":
        upload_single_post(client, base, repo, data, digest)
    else:
        upload_post_put(client, base, repo, data, digest)


def push_image(client: httpx.Client, base: str, repo: str, img: SmallImage, mode: str) -> None:
    """Blobs first, then the manifest that references them."""
    for data in img.blobs:
        upload_blob(client, base, repo, data, mode)
    resp = client.put(
        f"{base}/v2/{repo}/manifests/{img.tag}",
        content=img.manifest,
        headers={"Content-Type": OCI_MANIFEST},
    )
    expect(resp, 201, what=f"PUT manifest {img.tag}")


def get_verified(client: httpx.Client, url: str, digest: str, headers: dict[str, str] | None = None) -> bytes:
    """GET that must return exactly the content named by `digest`."""
    resp = client.get(url, headers=headers)
    expect(resp, 200, what=f"GET {url}")
    if sha256_digest(resp.content) != digest:
        raise BenchError(f"GET {url}: content does not match {digest}")
    return resp.content


def pull_image(client: httpx.Client, base: str, repo: str, img: SmallImage) -> None:
    """Manifest by tag, then every blob it names, as a client would."""
    body = get_verified(
        client,
        f"{base}/v2/{repo}/manifests/{img.tag}",
        sha256_digest(img.manifest),
        headers={"Accept": OCI_MANIFEST},
    )
    manifest = json.loads(body)
    for desc in [manifest["config"], *manifest["layers"]]:
        get_verified(client, f"{base}/v2/{repo}/blobs/{desc['digest']}", desc["digest"])


def bench_small(ctx: RunContext) -> dict[str, float]:
    """Workload 2: images/s for push and pull of many tiny images."""
    s = ctx.settings
    repo = f"bench/small-{ctx.run_id}"
    layer_size = max(1, int(s.small_layer_kb * 1024))
    images = [make_small_image(f"img-{i}", ctx.run_id, layer_size) for i in range(s.small_count)]
    mode = s.upload_mode
    if mode == "auto":
        mode = detect_upload_mode(ctx.client, ctx.base, repo, ctx.run_id, ctx.trash)
        ctx.result.notes.append(f"small push used {mode} blob uploads (auto-detected)")
    ctx.trash.add_images(repo, images)
    t0 = time.perf_counter()
    for img in images:
        push_image(ctx.client, ctx.base, repo, img, mode)
    push_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for img in images:
        pull_image(ctx.client, ctx.base, repo, img)
    pull_s = time.perf_counter() - t0
    return {"small_push": len(images) / push_s, "small_pull": len(images) / pull_s}


# --------------------------------------------------------------------------
# Workload 3: request rate
# --------------------------------------------------------------------------


@dataclass
class RateRun:
    """Raw outcome of one timed request loop (one process's share)."""

    ok: int
    errors: int
    start: float
    end: float
    latencies: list[float]


@dataclass(frozen=True)
class RateSpec:
    """What one request loop does; picklable so it can go to a process."""

    method: str
    url: str
    headers: dict[str, str]
    connections: int
    duration: float
    budget: int  # 0 = bounded by duration only
    timeout: float


class Budget:
    """Request counter shared by the threads of one process."""

    def __init__(self, limit: int) -> None:
        self._left = limit
        self._lock = threading.Lock() if limit > 0 else None

    def take(self) -> bool:
        """True while requests are left; free of locking when unbounded."""
        if self._lock is None:
            return True
        with self._lock:
            if self._left <= 0:
                return False
            self._left -= 1
            return True


class StartGate:
    """Releases all workers at once and tells them the common deadline."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.deadline = 0.0

    def open(self, deadline: float) -> None:
        self.deadline = deadline
        self.event.set()


class RateWorker(threading.Thread):
    """One connection doing back-to-back requests.

    Why threads, each with its own httpx.Client: measured on this kind of
    machine, one shared httpx.AsyncClient pool gets *slower* as connections
    are added (pool contention: ~370 req/s at 16 connections, ~120 at 64),
    which would measure httpx instead of the registry; one sync client per
    thread scales until the client CPU is used up.
    """

    def __init__(self, spec: RateSpec, budget: Budget, warmed: threading.Barrier, gate: StartGate) -> None:
        super().__init__(daemon=True)
        self.spec, self.budget, self.warmed, self.gate = spec, budget, warmed, gate
        self.ok = 0
        self.errors = 0
        self.latencies: list[float] = []
        self.warm_error: str | None = None

    def run(self) -> None:
        timeout = httpx.Timeout(self.spec.timeout, connect=10.0)
        with httpx.Client(timeout=timeout, trust_env=False) as client:
            self._warm_up(client)
            self.gate.event.wait()
            if self.warm_error is None:
                self._loop(client)

    def _request(self, client: httpx.Client) -> httpx.Response:
        return client.request(self.spec.method, self.spec.url, headers=self.spec.headers)

    def _warm_up(self, client: httpx.Client) -> None:
        """Open the connection and check the answer before timing starts."""
        try:
            expect(self._request(client), 200, what=f"warm-up {self.spec.method} {self.spec.url}")
        except Exception as exc:  # noqa: BLE001 - reported by the caller
            self.warm_error = f"{type(exc).__name__}: {exc}"
        finally:
            with contextlib.suppress(threading.BrokenBarrierError):
                self.warmed.wait()

    def _loop(self, client: httpx.Client) -> None:
        """Timed part: stop at the deadline or when the budget is spent."""
        deadline = self.gate.deadline
        while time.monotonic() < deadline and self.budget.take():
            t0 = time.monotonic()
            try:
                resp = self._request(client)
            except httpx.HTTPError:
                self.errors += 1
                continue
            if resp.status_code == 200:
                self.latencies.append(time.monotonic() - t0)
                self.ok += 1
            else:
                self.errors += 1


def rate_loop(spec: RateSpec, ready: Callable[[], None] | None = None) -> RateRun:
    """Warm up every connection (untimed), wait for the other processes if
    any (`ready`), then release all threads with one deadline.

    Timestamps use time.monotonic(), which on Linux is one system-wide clock,
    so start/end from several processes can be combined.
    """
    warmed = threading.Barrier(spec.connections + 1)
    gate = StartGate()
    budget = Budget(spec.budget)
    workers = [RateWorker(spec, budget, warmed, gate) for _ in range(spec.connections)]
    for w in workers:
        w.start()
    try:
        warmed.wait(timeout=spec.timeout + 30)
        failed = [w.warm_error for w in workers if w.warm_error]
        if failed:
            raise BenchError(failed[0])
        if ready is not None:
            ready()
        start = time.monotonic()
        gate.open(start + spec.duration)
    finally:
        gate.event.set()  # never leave a thread waiting, whatever happened
        for w in workers:
            w.join()
    return RateRun(
        ok=sum(w.ok for w in workers),
        errors=sum(w.errors for w in workers),
        start=start,
        end=time.monotonic(),
        latencies=[x for w in workers for x in w.latencies],
    )


def _rate_child(spec: RateSpec, barrier: Any, queue: Any) -> None:
    """Entry point of a load-generating process; reports back via the queue.
    Breaking the barrier on failure keeps siblings from waiting forever."""
    try:
        queue.put(("ok", rate_loop(spec, ready=barrier.wait)))
    except BaseException as exc:  # noqa: BLE001 - must reach the parent whatever it is
        barrier.abort()
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def split(total: int, parts: int) -> list[int]:
    """`total` spread as evenly as possible over `parts`."""
    q, r = divmod(total, parts)
    return [q + (1 if i < r else 0) for i in range(parts)]


def run_rate_processes(spec: RateSpec, processes: int) -> RateRun:
    """Spread the connections over several processes, for servers faster
    than one Python process (GIL) can drive.  All processes start their
    timed loops together (barrier)."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(processes)
    queue = ctx.Queue()
    budgets = split(spec.budget, processes) if spec.budget else [0] * processes
    procs = []
    for conns, budget in zip(split(spec.connections, processes), budgets, strict=True):
        child = RateSpec(spec.method, spec.url, spec.headers, conns, spec.duration, budget, spec.timeout)
        proc = ctx.Process(target=_rate_child, args=(child, barrier, queue), daemon=True)
        proc.start()
        procs.append(proc)
    try:
        outcomes = [queue.get(timeout=spec.duration + spec.timeout + 60) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()
    errors = [msg for kind, msg in outcomes if kind == "error"]
    if errors:
        raise BenchError("; ".join(errors))
    runs: list[RateRun] = [run for _, run in outcomes]
    return RateRun(
        ok=sum(r.ok for r in runs),
        errors=sum(r.errors for r in runs),
        start=min(r.start for r in runs),
        end=max(r.end for r in runs),
        latencies=[x for r in runs for x in r.latencies],
    )


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile; no interpolation, so it is a real sample."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def measure_rate(spec: RateSpec, processes: int) -> RateRun:
    """One process runs in place (no spawn cost); more fan out.  Never more
    processes than connections or requests, since a zero share would read
    as "unbounded"."""
    processes = max(1, min(processes, spec.connections, spec.budget or processes))
    if processes == 1:
        return rate_loop(spec)
    return run_rate_processes(spec, processes)


def rate_figures(key: str, run: RateRun, res: TargetResult) -> dict[str, float]:
    """req/s over the wall time of the whole timed loop, plus latencies."""
    if run.ok == 0:
        raise BenchError(f"{key}: no successful request ({run.errors} errors)")
    if run.errors:
        res.notes.append(f"{key}: {run.errors} failed requests (not counted)")
    lat = sorted(run.latencies)
    return {
        f"{key}_rps": run.ok / (run.end - run.start),
        f"{key}_p50": percentile(lat, 50) * 1000,
        f"{key}_p99": percentile(lat, 99) * 1000,
    }


def bench_rate(ctx: RunContext) -> dict[str, float]:
    """Workload 3: push one image (untimed), then hammer manifest GET by
    tag and blob HEAD, one after the other."""
    s = ctx.settings
    repo = f"bench/rate-{ctx.run_id}"
    img = make_small_image("latest", ctx.run_id, 2048)
    ctx.trash.add_images(repo, [img])
    push_image(ctx.client, ctx.base, repo, img, "post-put")
    layer_digest = sha256_digest(img.layer)
    cases: list[tuple[str, str, str, dict[str, str]]] = [
        ("manifest_get", "GET", f"{ctx.base}/v2/{repo}/manifests/{img.tag}", {"Accept": OCI_MANIFEST}),
        ("blob_head", "HEAD", f"{ctx.base}/v2/{repo}/blobs/{layer_digest}", {}),
    ]
    out: dict[str, float] = {}
    # wrk cannot time HEAD (it waits for the body that Content-Length announces): GET only.
    use_wrk = wrk.available() and not s.requests
    if use_wrk:
        ctx.result.notes.append("rate: GET measured with wrk, HEAD with the Python client")
    for key, method, url, headers in cases:
        if use_wrk and method == "GET":
            figures = wrk.run(method, url, headers, s.concurrency, s.duration)
            out.update({f"{key}_rps": figures["rps"], f"{key}_p50": figures["p50"], f"{key}_p99": figures["p99"]})
            continue
        spec = RateSpec(method, url, headers, s.concurrency, s.duration, s.requests, s.timeout)
        out.update(rate_figures(key, measure_rate(spec, s.processes), ctx.result))
    return out


# --------------------------------------------------------------------------
# Cleanup and per-target driver
# --------------------------------------------------------------------------


@dataclass
class Trash:
    """What a run pushed, so it can be deleted afterwards (untimed).

    Why: a 256 MiB layer per run adds up on a dev machine.  Deletion needs
    storage.delete.enabled on the registry; failures are only counted.
    """

    manifests: list[tuple[str, str]] = field(default_factory=list)
    blobs: list[tuple[str, str]] = field(default_factory=list)

    def add_images(self, repo: str, images: Sequence[SmallImage]) -> None:
        for img in images:
            self.manifests.append((repo, sha256_digest(img.manifest)))
            self.blobs += [(repo, sha256_digest(b)) for b in img.blobs]

    def empty(self, client: httpx.Client, base: str) -> int:
        """Delete manifests before blobs; returns how many deletes failed."""
        failed = 0
        items = [("manifests", r, d) for r, d in self.manifests] + [("blobs", r, d) for r, d in dict.fromkeys(self.blobs)]
        for kind, repo, digest in items:
            try:
                resp = client.delete(f"{base}/v2/{repo}/{kind}/{digest}")
                failed += resp.status_code not in (202, 200, 204, 404)
            except httpx.HTTPError:
                failed += 1
        return failed


Workload = Callable[[RunContext], dict[str, float]]
WORKLOADS: dict[str, Workload] = {"large": bench_large, "small": bench_small, "rate": bench_rate}


def log(msg: str) -> None:
    """Progress to stderr, so stdout holds only the table."""
    print(msg, file=sys.stderr, flush=True)


def run_round(target: Target, s: Settings, run_id: str) -> TargetResult:
    """One round of all selected workloads against one registry.  A failing
    workload is recorded and the next one still runs: a registry under
    construction should still get the figures it can produce."""
    res = TargetResult()
    trash = Trash()
    with make_client(s) as client:
        try:
            check_reachable(client, target.url)
        except (BenchError, httpx.HTTPError) as exc:
            res.errors = dict.fromkeys(s.workloads, f"unreachable: {exc}")
            return res
        for name in s.workloads:
            log(f"[{target.label}] round {run_id.rsplit('-', 1)[-1]}: {name} ...")
            t0 = time.perf_counter()
            try:
                res.values.update(WORKLOADS[name](RunContext(client, target, s, run_id, res, trash)))
            except (BenchError, httpx.HTTPError, ValueError, KeyError) as exc:
                res.errors[name] = f"{type(exc).__name__}: {exc}"
                log(f"[{target.label}] {name} FAILED: {res.errors[name]}")
            log(f"[{target.label}] {name} done in {time.perf_counter() - t0:.1f}s")
        if s.cleanup:
            failed = trash.empty(client, target.url)
            if failed:
                res.notes.append(f"cleanup: {failed} deletes failed (is storage delete enabled?)")
    return res


def merge_rounds(rounds: Sequence[TargetResult]) -> TargetResult:
    """Median per metric over the rounds where it was measured; errors say
    in how many rounds the workload failed; notes are de-duplicated."""
    out = TargetResult()
    for key in dict.fromkeys(k for r in rounds for k in r.values):
        vals = [r.values[key] for r in rounds if key in r.values]
        out.samples[key] = vals
        out.values[key] = statistics.median(vals)
    for name in dict.fromkeys(w for r in rounds for w in r.errors):
        msgs = [r.errors[name] for r in rounds if name in r.errors]
        out.errors[name] = f"failed in {len(msgs)}/{len(rounds)} rounds: {msgs[0]}"
    out.notes = list(dict.fromkeys(n for r in rounds for n in r.notes))
    return out


def run_all(targets: Sequence[Target], s: Settings, run_id: str) -> dict[str, TargetResult]:
    """Rounds interleave the targets, reversing the order every round, so
    slow drift of the machine (page cache, other tenants, CPU clocks) does
    not land on one target only."""
    per_target: dict[str, list[TargetResult]] = {t.label: [] for t in targets}
    for n in range(s.rounds):
        order = list(targets) if n % 2 == 0 else list(reversed(targets))
        for target in order:
            per_target[target.label].append(run_round(target, s, f"{run_id}-{n + 1}"))
    return {label: merge_rounds(rounds) for label, rounds in per_target.items()}


# --------------------------------------------------------------------------
# Ratios, table, JSON
# --------------------------------------------------------------------------


def ratio(m: Metric, value: float | None, ref: float | None) -> float | None:
    """Speed relative to the reference; >1 means faster for every row."""
    if value is None or ref is None or value <= 0 or ref <= 0:
        return None
    return value / ref if m.higher_is_better else ref / value


def overlaps(a: Sequence[float], b: Sequence[float]) -> bool:
    """True when the min-max ranges of two sample sets overlap, i.e. the
    difference is not larger than what the rounds scatter anyway."""
    return len(a) > 1 and len(b) > 1 and min(a) <= max(b) and min(b) <= max(a)


def fmt_value(v: float | None, unit: str, spread: float | None = None) -> str:
    """Three significant-ish digits, with the unit (and ±spread), or n/a."""
    if v is None or math.isnan(v):
        return "n/a"
    if spread is not None:
        return f"{fmt_value(v, unit)} ±{spread * 100:.0f}%"
    if v >= 1000:
        num = f"{v:,.0f}"
    elif v >= 10:
        num = f"{v:.1f}"
    else:
        num = f"{v:.2f}"
    return f"{num} {unit}"


def render_table(targets: Sequence[Target], ref: Target, results: dict[str, TargetResult], metrics: Sequence[Metric]) -> str:
    """Plain-text table: one value column per target, one ratio column per
    non-reference target, then a legend that states the direction."""
    others = [t for t in targets if t.label != ref.label]
    header = ["workload", *[t.label for t in targets], *[f"{t.label}/{ref.label}" for t in others]]
    rows = [header]
    for m in metrics:
        row = [m.title]
        row += [fmt_value(results[t.label].values.get(m.key), m.unit, results[t.label].spread(m.key)) for t in targets]
        for t in others:
            r = ratio(m, results[t.label].values.get(m.key), results[ref.label].values.get(m.key))
            noisy = overlaps(results[t.label].samples.get(m.key, []), results[ref.label].samples.get(m.key, []))
            row.append("n/a" if r is None else f"{r:.2f}x" + ("*" if noisy else " "))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    rounds = max((len(v) for r in results.values() for v in r.samples.values()), default=1)
    if rounds > 1:
        lines.append(f"Values are medians of {rounds} rounds; ±% is half the min-max range over the rounds.")
    if others:
        lines.append(
            f"Ratio columns X/{ref.label} = speed of X relative to the reference {ref.label}: "
            ">1.00x means X is faster, <1.00x slower."
        )
        lines.append(
            "(Throughput rows: X value / reference value; latency rows: reference latency / X latency.)"
        )
        if rounds > 1:
            lines.append("* = the two targets' min-max ranges overlap: the difference is within this machine's noise.")
    for t in targets:
        tr = results[t.label]
        by_error: dict[str, list[str]] = {}
        for name, err in tr.errors.items():
            by_error.setdefault(err, []).append(name)
        for err, names in by_error.items():
            lines.append(f"[{t.label}] {', '.join(names)} failed: {err}")
        for note in tr.notes:
            lines.append(f"[{t.label}] note: {note}")
    return "\n".join(lines)


def results_json(
    targets: Sequence[Target],
    ref: Target,
    s: Settings,
    results: dict[str, TargetResult],
    metrics: Sequence[Metric],
    run_id: str,
) -> dict[str, Any]:
    """Machine-readable copy of the table, with the settings that made it."""
    return {
        "run_id": run_id,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "settings": asdict(s),
        "reference": ref.label,
        "ratio_direction": "target speed / reference speed; >1 means the target is faster (latency: ref/target)",
        "targets": [asdict(t) for t in targets],
        "metrics": [asdict(m) for m in metrics],
        "results": {
            t.label: {
                "values": results[t.label].values,
                "errors": results[t.label].errors,
                "notes": results[t.label].notes,
                "samples": results[t.label].samples,
                "ratio_vs_reference": {
                    m.key: ratio(m, results[t.label].values.get(m.key), results[ref.label].values.get(m.key))
                    for m in metrics
                },
            }
            for t in targets
        },
    }


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def parse_target(text: str) -> Target:
    """LABEL=URL, URL without trailing slash."""
    label, sep, url = text.partition("=")
    if not sep or not label or not url.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"want LABEL=http://host:port, got {text!r}")
    return Target(label=label.strip(), url=url.strip().rstrip("/"))


def parse_workloads(text: str) -> tuple[str, ...]:
    """Comma list, kept in the canonical order."""
    wanted = {w.strip() for w in text.split(",") if w.strip()}
    unknown = wanted - set(WORKLOAD_NAMES)
    if unknown or not wanted:
        raise argparse.ArgumentTypeError(f"workloads are {','.join(WORKLOAD_NAMES)}; got {text!r}")
    return tuple(w for w in WORKLOAD_NAMES if w in wanted)


def build_parser() -> argparse.ArgumentParser:
    d = Settings()
    p = argparse.ArgumentParser(
        description="Benchmark registries over the OCI Distribution API; ratios are vs the reference (>1 = faster).",
    )
    p.add_argument("--target", action="append", type=parse_target, required=True, metavar="LABEL=URL",
                   help="registry to measure; repeat for each (table order)")
    p.add_argument("--reference", metavar="LABEL",
                   help="label the ratios are taken against (default: the first --target)")
    p.add_argument("--large-mb", type=float, default=d.large_mb, help="large layer size in MiB (%(default)s)")
    p.add_argument("--chunk-mb", type=float, default=d.chunk_mb, help="PATCH chunk size in MiB (%(default)s)")
    p.add_argument("--small-count", type=int, default=d.small_count, help="number of small images (%(default)s)")
    p.add_argument("--small-layer-kb", type=float, default=d.small_layer_kb, help="small layer size in KiB (%(default)s)")
    p.add_argument("--duration", type=float, default=d.duration, help="seconds per request-rate run (%(default)s)")
    p.add_argument("--requests", type=int, default=d.requests,
                   help="also stop a rate run after this many requests; 0 = duration only (%(default)s)")
    p.add_argument("--concurrency", type=int, default=d.concurrency, help="concurrent connections for rate runs (%(default)s)")
    p.add_argument("--processes", type=int, default=d.processes,
                   help="client processes sharing those connections, for fast servers (%(default)s)")
    p.add_argument("--upload-mode", choices=UPLOAD_MODES, default=d.upload_mode,
                   help="small-image blob uploads: single POST ?digest=, POST+PUT, or auto-detect (%(default)s)")
    p.add_argument("--workloads", type=parse_workloads, default=d.workloads, metavar="LIST",
                   help="comma list of large,small,rate (all)")
    p.add_argument("--rounds", type=int, default=d.rounds,
                   help="repeat everything this often, targets interleaved; medians are reported (%(default)s)")
    p.add_argument("--timeout", type=float, default=d.timeout, help="per-request timeout in s (%(default)s)")
    p.add_argument("--no-cleanup", action="store_true", help="keep what was pushed")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    """Validated Settings; bad numbers are caught before any traffic."""
    for name in ("large_mb", "chunk_mb", "small_layer_kb", "duration", "timeout"):
        if getattr(args, name) <= 0:
            raise SystemExit(f"--{name.replace('_', '-')} must be > 0")
    for name in ("small_count", "concurrency", "processes", "rounds"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    return Settings(
        large_mb=args.large_mb, chunk_mb=args.chunk_mb, small_count=args.small_count,
        small_layer_kb=args.small_layer_kb, duration=args.duration, requests=max(0, args.requests),
        concurrency=args.concurrency, processes=args.processes, upload_mode=args.upload_mode,
        timeout=args.timeout, cleanup=not args.no_cleanup, workloads=args.workloads, rounds=args.rounds,
    )


def pick_reference(targets: Sequence[Target], label: str | None) -> Target:
    """The --reference target, or the first one."""
    if label is None:
        return targets[0]
    for t in targets:
        if t.label == label:
            return t
    raise SystemExit(f"--reference {label!r} is not one of the --target labels")


def main(argv: Sequence[str] | None = None) -> int:
    """Run everything; exit status 1 if any workload failed on any target
    (the table is printed regardless), 0 otherwise."""
    args = build_parser().parse_args(argv)
    targets: list[Target] = args.target
    if len({t.label for t in targets}) != len(targets):
        raise SystemExit("--target labels must be unique")
    s = settings_from(args)
    ref = pick_reference(targets, args.reference)
    run_id = uuid.uuid4().hex[:10]
    results = run_all(targets, s, run_id)
    metrics = metrics_for(s)
    print(render_table(targets, ref, results, metrics))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results_json(targets, ref, s, results, metrics, run_id), fh, indent=2)
            fh.write("\n")
        log(f"results written to {args.json}")
    return 1 if any(r.errors for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
