"""The mirror row of `make bench`: pulls through Berth as a pull-through cache against pulls made
directly from its upstream (the Go registry, Debian's docker-registry, on loopback).

Each round pushes fresh images to the upstream (untimed), then times the same client pull three
ways, one after the other:

* direct: from the upstream itself (the reference);
* cold: through a Berth whose ``proxy.remoteurl`` is that upstream, which holds nothing yet, so
  every manifest and blob is fetched from the upstream, streamed to the client and stored;
* warm: the same pull through Berth again, now served from its store (a pull by tag still asks
  the upstream for the tag's digest with a HEAD, as registry:2 does with ``tag_ttl`` 0).

With a ``peer`` (the Go registry itself configured as a pull-through cache of the same upstream,
``proxy.remoteurl``), its cold and warm pulls are timed the same way, for comparison: what the
reference mirror achieves on the same machine.

Two images shapes: one large image (config and one ``large_mb`` layer, MiB/s, sha256 checked on
the fly) and ``mirror_small`` small images (img/s: manifest by tag and its two blobs each).
Ratios are Berth's speed over the direct pull, >1.00x = Berth faster; the issue's targets are
cold >= 0.8x and warm >= 1.0x.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from bench import distribution_client as distribution
from bench import image_content, ratio_table, registry_bench, registry_workloads

ACCEPT = {"Accept": image_content.OCI_MANIFEST}
PEER_MODES = ("peer_cold", "peer_warm")


@dataclass(frozen=True)
class Image:
    repo: str
    tag: str
    manifest: bytes
    blobs: tuple[tuple[str, int], ...]  # (digest, size)

    @property
    def size(self) -> int:
        return len(self.manifest) + sum(s for _, s in self.blobs)


def push_large(client: httpx.Client, upstream: str, repo: str, large_mb: float, run_id: str) -> Image:
    """A config and one large random layer, pushed chunked, and a manifest tagged v1."""
    blob = image_content.RandomBlob(int(large_mb * image_content.MiB))
    distribution.push_chunked(client, upstream, repo, blob, 16 * image_content.MiB)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"bench.run": run_id}},
            "rootfs": {"type": "layers", "diff_ids": [blob.digest]},
        }
    ).encode()
    distribution.upload_post_put(client, upstream, repo, config, image_content.sha256_digest(config))
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": image_content.OCI_MANIFEST,
            "config": {"mediaType": image_content.OCI_CONFIG, "digest": image_content.sha256_digest(config), "size": len(config)},
            "layers": [{"mediaType": image_content.OCI_LAYER, "digest": blob.digest, "size": blob.size}],
        }
    ).encode()
    resp = client.put(f"{upstream}/v2/{repo}/manifests/v1", content=manifest, headers={"Content-Type": image_content.OCI_MANIFEST})
    distribution.expect(resp, 201, what="PUT manifest (upstream)")
    return Image(repo, "v1", manifest, ((image_content.sha256_digest(config), len(config)), (blob.digest, blob.size)))


def push_small(client: httpx.Client, upstream: str, repo: str, count: int, run_id: str) -> list[Image]:
    images = []
    for i in range(count):
        img = image_content.make_small_image(f"img-{i}", run_id, 4096)
        distribution.push_image(client, upstream, repo, img, "post-put")
        images.append(Image(repo, img.tag, img.manifest, tuple((image_content.sha256_digest(b), len(b)) for b in img.blobs)))
    return images


def pull(client: httpx.Client, base: str, img: Image) -> None:
    """What a client does: the manifest by tag (checked), then every blob, streamed and checked."""
    distribution.get_verified(
        client, f"{base}/v2/{img.repo}/manifests/{img.tag}", image_content.sha256_digest(img.manifest), headers=ACCEPT
    )
    for digest, size in img.blobs:
        distribution.pull_verified(client, base, img.repo, digest, size)


def timed(client: httpx.Client, base: str, images: Sequence[Image]) -> float:
    t0 = time.perf_counter()
    for img in images:
        pull(client, base, img)
    return time.perf_counter() - t0


def one_round(
    client: httpx.Client, upstream: str, mirror: str, large_mb: float, small: int, run_id: str, peer: str | None = None
) -> dict[str, float]:
    out: dict[str, float] = {}
    large = push_large(client, upstream, f"bench/mirror-large-{run_id}", large_mb, run_id)
    smalls = push_small(client, upstream, f"bench/mirror-small-{run_id}", small, run_id)
    bases = {"direct": upstream, "cold": mirror, "warm": mirror}
    if peer:
        bases.update(peer_cold=peer, peer_warm=peer)
    for mode, base in bases.items():
        registry_bench.log(f"[mirror] round {run_id.rsplit('-', 1)[-1]}: {mode} ...")
        out[f"large_{mode}"] = large.size / image_content.MiB / timed(client, base, [large])
        out[f"small_{mode}"] = len(smalls) / timed(client, base, smalls)
    return out


def run(upstream: str, mirror: str, large_mb: float, small: int, rounds: int, peer: str | None = None) -> dict[str, list[float]]:
    """Every round's figures per key (large_direct, large_cold, ..., small_peer_warm)."""
    run_id = uuid.uuid4().hex[:10]
    samples: dict[str, list[float]] = {}
    with registry_workloads.make_client(registry_workloads.Settings()) as client:
        for r in range(rounds):
            for key, value in one_round(client, upstream, mirror, large_mb, small, f"{run_id}-{r + 1}", peer).items():
                samples.setdefault(key, []).append(value)
    return samples


def render(samples: dict[str, list[float]], large_mb: float, small: int) -> str:
    def cell(key: str, unit: str) -> str:
        vals = samples.get(key, [])
        if not vals:
            return "n/a"
        med = statistics.median(vals)
        spread = (max(vals) - min(vals)) / 2 / med if len(vals) > 1 and med else None
        return ratio_table.fmt_value(med, unit, spread)

    def ratio(key: str, direct: list[float]) -> tuple[float | None, str]:
        vals = samples.get(key, [])
        value = statistics.median(vals) / statistics.median(direct) if vals and direct else None
        noisy = ratio_table.overlaps(vals, direct)
        return value, "n/a" if value is None else f"{value:.2f}x" + ("*" if noisy else " ")

    peer = any(k.endswith(PEER_MODES) for k in samples)
    head = ["mirror workload", "berth (mirror)", "upstream direct", "berth/direct", "target"]
    rows = [head + (["registry2 proxy", "registry2 proxy/direct"] if peer else [])]
    for shape, title, unit in (
        ("large", f"large image ({large_mb:g} MiB layer)", "MiB/s"),
        ("small", f"small images ({small} x manifest + 2 blobs)", "img/s"),
    ):
        direct = samples.get(f"{shape}_direct", [])
        for mode, target in (("cold", 0.8), ("warm", 1.0)):
            value, shown = ratio(f"{shape}_{mode}", direct)
            verdict = "" if value is None else (">= " if value >= target else "MISSES ") + f"{target:.1f}x"
            row = [f"{title}, {mode} pull", cell(f"{shape}_{mode}", unit), cell(f"{shape}_direct", unit), shown, verdict]
            if peer:
                row += [cell(f"{shape}_peer_{mode}", unit), ratio(f"{shape}_peer_{mode}", direct)[1]]
            rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join([row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))]).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    rounds = max((len(v) for v in samples.values()), default=1)
    lines += [
        "",
        (
            f"Mirror: Berth with proxy.remoteurl = the Go registry, pulled through (cold: nothing cached; warm: "
            f"again) against the same pulls straight from the Go registry; medians of {rounds} rounds, "
            ">1.00x = faster than direct; * = ranges overlap."
            + (" registry2 proxy: the Go registry itself as a pull-through cache of the same upstream, timed the same way." if peer else "")
        ),
    ]
    return "\n".join(lines)
