#!/usr/bin/env python3
"""Benchmark Berth against the reference Go registry (distribution).

Why a runner: the comparison is only meaningful if the reference registry
is started the same way every time (fresh storage, default registry:2 style
config, loopback only) and always torn down, so this script owns its
lifetime; Berth's lifetime belongs to whoever calls this (`make bench`),
which passes its URL with --berth.

What it does:
  * if `docker-registry` (Debian's build of distribution) is on PATH, or
    --registry-bin names one, start it with a generated config in a temp dir
    on a free 127.0.0.1 port, wait until GET /v2/ answers, and kill it by PID
    at the end;
  * run bench/registry_bench.py with Berth first ("berth") and the Go
    registry ("registry2") as the reference, so every ratio reads
    "berth relative to registry2, >1.00x = Berth faster";
  * without the Go registry, measure Berth alone and say so; without
    --berth, measure the Go registry alone.
  * the garbage-collection row (bench/gc_bench.py; --gc-only runs just it,
    --no-gc skips it): `berth garbage-collect --delay 0` and `docker-registry
    garbage-collect`, offline, on the same tree generated in registry:2's
    layout (10,000 manifests / 50,000 blobs; --quick 2,000 / 10,000).

Sizes: flag > environment (BENCH_LARGE_MB, BENCH_SMALL_COUNT, BENCH_DURATION,
BENCH_CONCURRENCY, BENCH_ROUNDS) > --quick preset (32 MiB, 50 images, 2 s)
> full defaults (256 MiB, 200 images, 5 s); both presets run 3 rounds,
because on a small shared machine one round of the same registry against
itself scatters by tens of percent.  Anything not known here (e.g. --processes,
--chunk-mb, --workloads, --no-cleanup) is passed to registry_bench as is.

    python bench/run.py --quick                          # Go registry only
    python bench/run.py --berth http://127.0.0.1:8080    # full comparison

The registries it starts are in bench/registry_servers.py; the workloads and the ratio table in
bench/registry_bench.py and the modules it names.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence

import httpx

# Run as a script (`python bench/run.py`), Python puts bench/ on the path, not the repository
# root: add the root, so `bench` imports the same way in both modes.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import gc_bench, listing_bench, memory_bench, mirror_bench, registry_bench, s3_rows
from bench.distribution_client import BenchError
from bench.registry_servers import (
    CONFIG_TEMPLATE,
    LocalBerth,
    Reference,
    berth_pids,
    free_port,
    proxy_config,
    start_berth,
    start_reference,
    stop_berth,
    stop_reference,
    wait_ready,
)

# The garbage-collection row's tree (bench/gc_bench.py): the size, and a small one for --quick.
GC_FULL = {"manifests": 10_000, "blobs": 50_000, "rounds": 1}
GC_QUICK = {"manifests": 2_000, "blobs": 10_000, "rounds": 3}

FULL = {"large_mb": 256.0, "small_count": 200, "duration": 5.0, "concurrency": 16, "rounds": 3}
QUICK = {"large_mb": 32.0, "small_count": 50, "duration": 2.0, "concurrency": 16, "rounds": 3}
ENV = {
    "large_mb": "BENCH_LARGE_MB",
    "small_count": "BENCH_SMALL_COUNT",
    "duration": "BENCH_DURATION",
    "concurrency": "BENCH_CONCURRENCY",
    "rounds": "BENCH_ROUNDS",
}
CASTS = {"large_mb": float, "small_count": int, "duration": float, "concurrency": int, "rounds": int}

REFERENCE_LABEL = "registry2"
BERTH_LABEL = "berth"
CACHED_LABEL = "berth+redis"
DIRECT_LABEL = "berth+sendfile"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Benchmark Berth (--berth URL) against the Go reference registry; "
        "ratios are berth/registry2, >1.00x = Berth faster. "
        "Unknown options are passed to registry_bench.py.",
    )
    p.add_argument(
        "--berth",
        metavar="URL",
        default=os.environ.get("BERTH_URL"),
        help="base URL of a running Berth (env BERTH_URL); omitted = reference only",
    )
    p.add_argument(
        "--registry-bin",
        default=os.environ.get("REGISTRY_BIN") or shutil.which("docker-registry"),
        help="Go registry binary (env REGISTRY_BIN; default: docker-registry on PATH)",
    )
    p.add_argument("--start-berth", action="store_true", help="start Berth's services here (temp storage) and measure them")
    p.add_argument("--no-reference", action="store_true", help="do not start the Go registry")
    p.add_argument(
        "--with-cache",
        action="store_true",
        help="with --start-berth: also a second Berth whose gateway caches metadata in Redis (needs redis-server)",
    )
    p.add_argument(
        "--with-direct",
        action="store_true",
        help="with --start-berth: also a Berth whose large blob GETs redirect to its blobstore's "
        "listener (storage_redirect + blobstore.public_url: sendfile)",
    )
    p.add_argument(
        "--s3", action="store_true", help="also the S3 rows: Berth and the Go registry each on a bucket of one local moto server"
    )
    p.add_argument("--s3-only", action="store_true", help="only the S3 rows")
    p.add_argument("--no-memory", action="store_true", help="skip the memory rows")
    p.add_argument(
        "--memory-only",
        action="store_true",
        help="only the memory rows: RSS per process while one large blob is pushed and pulled repeatedly",
    )
    p.add_argument("--memory-mb", type=int, help="memory rows: blob size in MiB (4096; --quick 512)")
    p.add_argument("--memory-repetitions", type=int, default=3, help="memory rows: push+pull repetitions (%(default)s)")
    p.add_argument(
        "--no-mirror",
        action="store_true",
        help="skip the mirror row (with --start-berth and the Go registry: Berth as its pull-through cache)",
    )
    p.add_argument("--mirror-only", action="store_true", help="only the mirror row")
    p.add_argument(
        "--mirror-streamed", action="store_true", help="mirror row: the cached blobs streamed through the gateway (no direct reads)"
    )
    p.add_argument(
        "--listing-only",
        action="store_true",
        help="only the catalog/tags rows (both registries on one generated tree; bench/listing_bench.py)",
    )
    p.add_argument("--no-listing", action="store_true", help="skip the catalog/tags rows")
    p.add_argument("--listing-repositories", type=int, default=100_000, help="repositories in the listing tree")
    p.add_argument("--listing-tags", type=int, default=10_000, help="tags of one repository in the listing tree")
    p.add_argument("--no-gc", action="store_true", help="skip the garbage-collection row")
    p.add_argument(
        "--gc-only",
        action="store_true",
        help="only the garbage-collection row: `berth garbage-collect` against `docker-registry "
        "garbage-collect` on the same generated tree (bench/gc_bench.py)",
    )
    p.add_argument("--gc-manifests", type=int, help="GC row: manifests (10000; --quick 2000)")
    p.add_argument("--gc-blobs", type=int, help="GC row: blobs, manifests included (50000; --quick 10000)")
    p.add_argument("--gc-rounds", type=int, help="GC row: rounds, medians reported (1; --quick 3)")
    p.add_argument("--quick", action="store_true", help="small sizes for a run of about a minute: 32 MiB, 50 images, 2 s rate runs")
    p.add_argument("--large-mb", type=float, help="large layer MiB (env BENCH_LARGE_MB)")
    p.add_argument("--small-count", type=int, help="small images (env BENCH_SMALL_COUNT)")
    p.add_argument("--duration", type=float, help="seconds per rate run (env BENCH_DURATION)")
    p.add_argument("--concurrency", type=int, help="rate-run connections (env BENCH_CONCURRENCY)")
    p.add_argument("--rounds", type=int, help="rounds, targets interleaved, medians reported (env BENCH_ROUNDS)")
    p.add_argument("--json", metavar="PATH", help="also write results as JSON")
    p.add_argument("--keep-tmp", action="store_true", help="keep the Go registry's temp dir (config, log, storage)")
    return p


def sizes(args: argparse.Namespace) -> dict[str, float | int]:
    """Flag, else environment, else the --quick or full preset."""
    preset = QUICK if args.quick else FULL
    out: dict[str, float | int] = {}
    for key, default in preset.items():
        flag = getattr(args, key)
        env = os.environ.get(ENV[key])
        out[key] = flag if flag is not None else CASTS[key](env) if env else default
    return out


def bench_argv(args: argparse.Namespace, targets: list[str], reference: str, extra: Sequence[str]) -> list[str]:
    """Command line for registry_bench.main."""
    argv: list[str] = []
    for target in targets:
        argv += ["--target", target]
    argv += ["--reference", reference]
    for key, value in sizes(args).items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    if args.json:
        argv += ["--json", args.json]
    return argv + list(extra)


def terminate_on_sigterm() -> None:
    """Turn SIGTERM (e.g. make being stopped) into SystemExit so the
    `finally` that kills the Go registry still runs."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def run_mirror_row(args: argparse.Namespace, ref: Reference) -> int:
    """The mirror row: a Berth mirroring the Go registry, pulls through it (cold, then warm)
    against pulls straight from the Go registry (bench/mirror_bench.py). The mirror runs as we
    advise for filesystem storage: cached large blobs are read from the blobstore directly
    (storage_redirect + blobstore.public_url); --mirror-streamed measures it without."""
    s = sizes(args)
    small = min(int(s["small_count"]), 50)
    mirror = start_berth(extra_env={"REGISTRY_PROXY_REMOTEURL": ref.url}, direct=not args.mirror_streamed)
    print(
        f"berth as a mirror of {ref.url}: started at {mirror.url} "
        f"({'blob bytes through the gateway' if args.mirror_streamed else 'direct blob reads'})",
        file=sys.stderr,
    )
    peer = start_reference(args.registry_bin, proxy_config(ref.url))
    print(f"the Go registry as a pull-through cache of {ref.url}: {peer.url}", file=sys.stderr)
    try:
        samples = mirror_bench.run(ref.url, mirror.url, float(s["large_mb"]), small, int(s["rounds"]), peer.url)
    except (BenchError, httpx.HTTPError) as exc:
        tail = (mirror.tmp / "berth.log").read_text(errors="replace")[-2000:]
        print(f"mirror row failed: {type(exc).__name__}: {exc}\nBerth's log ends with:\n{tail}")
        return 1
    finally:
        stop_berth(mirror)
        stop_reference(peer, args.keep_tmp)
    print()
    print(mirror_bench.render(samples, float(s["large_mb"]), small))
    return 0


def run_gc_row(args: argparse.Namespace) -> int:
    """The garbage-collection row: offline mark+sweep of both registries on the same tree."""
    preset = GC_QUICK if args.quick else GC_FULL
    manifests = args.gc_manifests or preset["manifests"]
    blobs = args.gc_blobs or preset["blobs"]
    rounds = args.gc_rounds or preset["rounds"]
    registry_bin = None if args.no_reference else args.registry_bin
    try:
        shape, samples = gc_bench.run(registry_bin, manifests, blobs, rounds, keep=args.keep_tmp)
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"gc row failed: {exc}")
        return 1
    print()
    print(gc_bench.render(shape, samples))
    return 0


def run_memory_rows(args: argparse.Namespace) -> int:
    """RSS of Berth's processes (streamed through the gateway, and with direct reads) and of the Go
    registry, each started fresh, while one large blob is pushed and pulled repeatedly."""
    size_mb = args.memory_mb or (512 if args.quick else 4096)
    blob = memory_bench.RandomBlob(size_mb * memory_bench.MiB)
    print(f"memory rows: {size_mb} MiB blob, computing its digest ...", file=sys.stderr)
    _ = blob.digest
    samples = []
    try:
        for label, direct in ((BERTH_LABEL, False), (DIRECT_LABEL, True)):
            berth = start_berth(direct=direct)
            try:
                print(f"[{label}] memory: {args.memory_repetitions} x push+pull of {size_mb} MiB ...", file=sys.stderr)
                samples.append(memory_bench.measure(label, berth.url, berth_pids(berth), blob, args.memory_repetitions, time.monotonic))
            finally:
                stop_berth(berth)
        if args.registry_bin and not args.no_reference:
            ref = start_reference(args.registry_bin)
            try:
                print(f"[{REFERENCE_LABEL}] memory: {args.memory_repetitions} x push+pull of {size_mb} MiB ...", file=sys.stderr)
                samples.append(
                    memory_bench.measure(
                        REFERENCE_LABEL, ref.url, {"registry": ref.proc.pid}, blob, args.memory_repetitions, time.monotonic
                    )
                )
            finally:
                stop_reference(ref, keep_tmp=False)
    except (BenchError, httpx.HTTPError, RuntimeError) as exc:
        print(f"memory rows failed: {type(exc).__name__}: {exc}")
        return 1
    print()
    print(memory_bench.render(samples, size_mb))
    return 0


def run_s3_rows(args: argparse.Namespace, extra: Sequence[str]) -> int:
    """The filesystem rows again with both registries storing in S3 (one moto server, a bucket
    each); large blobs are capped at 64 MiB (moto holds every object in its memory)."""
    if not args.registry_bin or args.no_reference:
        print("S3 rows need the Go registry (docker-registry)", file=sys.stderr)
        return 2
    with s3_rows.moto_server() as moto:
        berth = start_berth(extra_env=moto.berth_env(moto.new_bucket("berth"), rootdirectory="registry"))
        bucket = moto.new_bucket("registry2")
        ref: Reference | None = None
        try:
            ref = start_reference(args.registry_bin, lambda port, _root: s3_rows.registry2_config(moto, bucket, port))
            print(f"S3 rows on {moto.endpoint}: berth at {berth.url}, registry2 at {ref.url}", file=sys.stderr)
            argv = bench_argv(args, [f"{BERTH_LABEL}-s3={berth.url}", f"{REFERENCE_LABEL}-s3={ref.url}"], f"{REFERENCE_LABEL}-s3", extra)
            argv += ["--large-mb", str(min(64.0, float(sizes(args)["large_mb"])))]
            print("\nS3 rows (moto server on loopback):")
            return registry_bench.main(argv)
        finally:
            if ref is not None:
                stop_reference(ref, keep_tmp=False)
            stop_berth(berth)


def run_listing_rows(args: argparse.Namespace) -> int:
    """Catalog and tags pages of one generated tree, Berth and the Go registry both reading it."""
    if not args.registry_bin:
        print("listing rows need the Go registry (docker-registry)", file=sys.stderr)
        return 2
    print(
        listing_bench.run(
            args.registry_bin,
            start_berth,
            stop_berth,
            CONFIG_TEMPLATE,
            free_port,
            wait_ready,
            repositories=args.listing_repositories,
            tags=args.listing_tags,
            rounds=max(2, int(sizes(args)["rounds"]) if args.rounds else 2),
        )
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    if args.listing_only:
        return run_listing_rows(args)
    terminate_on_sigterm()
    if args.gc_only:
        return run_gc_row(args)
    if args.memory_only:
        return run_memory_rows(args)
    if args.s3_only:
        return run_s3_rows(args, extra)
    status = _main(args, extra)
    if args.s3 and args.start_berth and not args.mirror_only:
        status = max(status, run_s3_rows(args, extra))
    if not args.no_gc and not args.mirror_only and (args.start_berth or args.berth):
        status = max(status, run_gc_row(args))
    if not args.no_memory and not args.mirror_only and args.start_berth:
        status = max(status, run_memory_rows(args))
    return status


def _main(args: argparse.Namespace, extra: Sequence[str]) -> int:
    others = args.start_berth and not args.mirror_only
    local: LocalBerth | None = start_berth() if others else None
    cached: LocalBerth | None = start_berth(cache=True) if others and args.with_cache else None
    direct: LocalBerth | None = start_berth(direct=True) if others and args.with_direct else None
    if local is not None:
        args.berth = local.url
        print(f"berth: started at {local.url}", file=sys.stderr)
    if cached is not None:
        args.cached_berth = cached.url
        print(f"berth with the Redis cache: started at {cached.url}", file=sys.stderr)
    if direct is not None:
        args.direct_berth = direct.url
        print(f"berth with direct blob reads: started at {direct.url}", file=sys.stderr)
    try:
        status = _compare(args, extra)
        if args.start_berth and not args.mirror_only and not args.no_listing:
            status = max(status, run_listing_rows(args))
        return status
    finally:
        for started in (local, cached, direct):
            if started is not None:
                stop_berth(started)


def _compare(args: argparse.Namespace, extra: Sequence[str]) -> int:
    use_reference = bool(args.registry_bin) and not args.no_reference
    if not use_reference and not args.berth:
        print("nothing to measure: no --berth URL, and no Go registry (docker-registry not on PATH or --no-reference)", file=sys.stderr)
        return 2
    if not use_reference and not args.no_reference:
        print("docker-registry not found on PATH: measuring Berth alone, no ratios.", file=sys.stderr)
    if use_reference and not args.berth and not args.mirror_only:
        print("no --berth URL given: measuring the Go reference registry alone.", file=sys.stderr)
    terminate_on_sigterm()
    ref: Reference | None = None
    try:
        targets = [f"{BERTH_LABEL}={args.berth.rstrip('/')}"] if args.berth else []
        if getattr(args, "cached_berth", None):
            targets.append(f"{CACHED_LABEL}={args.cached_berth}")
        if getattr(args, "direct_berth", None):
            targets.append(f"{DIRECT_LABEL}={args.direct_berth}")
        if use_reference:
            ref = start_reference(args.registry_bin)
            print(f"reference registry: {args.registry_bin} pid {ref.proc.pid} at {ref.url}", file=sys.stderr)
            targets.append(f"{REFERENCE_LABEL}={ref.url}")
        reference = REFERENCE_LABEL if use_reference else BERTH_LABEL
        status = 0 if args.mirror_only else registry_bench.main(bench_argv(args, targets, reference, extra))
        if ref is not None and args.start_berth and not args.no_mirror:
            status = max(status, run_mirror_row(args, ref))
        return status
    finally:
        if ref is not None:
            stop_reference(ref, keep_tmp=args.keep_tmp)


if __name__ == "__main__":
    sys.exit(main())
