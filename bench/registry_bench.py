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

This module is the driver (rounds, targets, command line); the rest is split by job:
image_content.py (what is pushed), distribution_client.py (the API calls), rate_load.py (the
concurrent load generator), registry_workloads.py (the three workloads, their settings and
results), ratio_table.py (rows, ratios, the table and its JSON copy).

Usage:
    registry_bench.py --target berth=http://127.0.0.1:5000 \
                      --target registry2=http://127.0.0.1:5001 \
                      [--reference registry2] [--large-mb 256] [--small-count 200]
                      [--duration 5] [--concurrency 16] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence

import httpx

# Run as a script (`python bench/run.py`), Python puts bench/ on the path, not the repository
# root: add the root, so `bench` imports the same way in both modes.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.distribution_client import BenchError, check_reachable
from bench.ratio_table import metrics_for, render_table, results_json
from bench.registry_workloads import (
    UPLOAD_MODES,
    WORKLOAD_NAMES,
    WORKLOADS,
    RunContext,
    Settings,
    Target,
    TargetResult,
    Trash,
    make_client,
    merge_rounds,
)


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
    p.add_argument(
        "--target",
        action="append",
        type=parse_target,
        required=True,
        metavar="LABEL=URL",
        help="registry to measure; repeat for each (table order)",
    )
    p.add_argument("--reference", metavar="LABEL", help="label the ratios are taken against (default: the first --target)")
    p.add_argument("--large-mb", type=float, default=d.large_mb, help="large layer size in MiB (%(default)s)")
    p.add_argument("--chunk-mb", type=float, default=d.chunk_mb, help="PATCH chunk size in MiB (%(default)s)")
    p.add_argument("--small-count", type=int, default=d.small_count, help="number of small images (%(default)s)")
    p.add_argument("--small-layer-kb", type=float, default=d.small_layer_kb, help="small layer size in KiB (%(default)s)")
    p.add_argument("--duration", type=float, default=d.duration, help="seconds per request-rate run (%(default)s)")
    p.add_argument(
        "--requests", type=int, default=d.requests, help="also stop a rate run after this many requests; 0 = duration only (%(default)s)"
    )
    p.add_argument("--concurrency", type=int, default=d.concurrency, help="concurrent connections for rate runs (%(default)s)")
    p.add_argument(
        "--processes", type=int, default=d.processes, help="client processes sharing those connections, for fast servers (%(default)s)"
    )
    p.add_argument(
        "--upload-mode",
        choices=UPLOAD_MODES,
        default=d.upload_mode,
        help="small-image blob uploads: single POST ?digest=, POST+PUT (every registry takes it: the same "
        "requests for all), or the fastest each registry takes (auto) (%(default)s)",
    )
    p.add_argument("--workloads", type=parse_workloads, default=d.workloads, metavar="LIST", help="comma list of large,small,rate (all)")
    p.add_argument(
        "--rounds", type=int, default=d.rounds, help="repeat everything this often, targets interleaved; medians are reported (%(default)s)"
    )
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
        large_mb=args.large_mb,
        chunk_mb=args.chunk_mb,
        small_count=args.small_count,
        small_layer_kb=args.small_layer_kb,
        duration=args.duration,
        requests=max(0, args.requests),
        concurrency=args.concurrency,
        processes=args.processes,
        upload_mode=args.upload_mode,
        timeout=args.timeout,
        cleanup=not args.no_cleanup,
        workloads=args.workloads,
        rounds=args.rounds,
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
