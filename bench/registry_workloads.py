"""The three timed workloads of the registry benchmark (large layer, small images, request rate),
what shapes them (``Settings``) and what they produce (``TargetResult``, merged over rounds). Every
target gets exactly the same work; set-up and clean-up (``Trash``) stay outside the timed parts.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx

from bench import wrk
from bench.distribution_client import (
    BenchError,
    head_blob_size,
    pull_image,
    pull_verified,
    push_chunked,
    push_image,
    upload_single_post,
)
from bench.image_content import (
    OCI_MANIFEST,
    MiB,
    RandomBlob,
    SmallImage,
    make_small_image,
    sha256_digest,
)
from bench.rate_load import RateRun, RateSpec, measure_rate, percentile

WORKLOAD_NAMES = ("large", "small", "rate")
UPLOAD_MODES = ("auto", "single-post", "post-put")


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
    # POST + PUT by default: the requests every registry takes (registry:2 has no single POST), so
    # the small-push row compares the same work; "auto" lets each use its fastest.
    upload_mode: str = "post-put"
    timeout: float = 120.0
    cleanup: bool = True
    workloads: tuple[str, ...] = WORKLOAD_NAMES
    rounds: int = 3


@dataclass(frozen=True)
class Target:
    """One registry under test, by the label used in the table."""

    label: str
    url: str


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
    out = {"large_push": mib / push_s, "large_pull": mib / pull_s}
    if shutil.which("curl"):
        out["large_raw_pull"] = mib / raw_pull_seconds(f"{ctx.base}/v2/{repo}/blobs/{digest}", blob.size)
    return out


def raw_pull_seconds(url: str, size: int) -> float:
    """One GET by curl into /dev/null, redirects followed: what the registry can send, where the
    Python client (which also hashes) would measure itself first."""
    t0 = time.perf_counter()
    done = subprocess.run(
        ["curl", "-sS", "-L", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    seconds = time.perf_counter() - t0
    status, _, got = done.stdout.partition(" ")
    if done.returncode != 0 or status != "200" or got != str(size):
        raise BenchError(f"curl GET {url}: exit {done.returncode}, {done.stdout!r} {done.stderr.strip()[:200]}")
    return seconds


def detect_upload_mode(client: httpx.Client, base: str, repo: str, run_id: str, trash: Trash) -> str:
    """With --upload-mode auto, try one untimed single POST ?digest=; use it
    if the registry supports it (201), else fall back to POST + PUT, as real
    clients do.  So each registry is timed on its best conforming path."""
    probe = f"upload-mode probe {run_id} {uuid.uuid4()}".encode()
    digest = sha256_digest(probe)
    trash.blobs.append((repo, digest))
    return "single-post" if upload_single_post(client, base, repo, probe, digest) else "post-put"


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


Workload = Callable[[RunContext], dict[str, float]]
WORKLOADS: dict[str, Workload] = {"large": bench_large, "small": bench_small, "rate": bench_rate}


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
