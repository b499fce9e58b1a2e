"""Catalog and tags pages at scale, Berth against registry:2 on one tree.

The tree is written straight to disk in registry:2's storage layout (pushing 100,000 repositories
would take an hour): ``--repositories`` repositories in namespaces of 250 (names with dashes, dots
and underscores, a few nested under others) and one repository, ``big/tags``, with ``--tags`` tags.
Both registries are started on that one folder and read it; each row is the median latency of
``--requests`` sequential GETs, the registries alternated over ``--rounds`` rounds, and the ratio is
registry:2's latency divided by Berth's (>1.00x = Berth faster), as in the other rows.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

PER_NAMESPACE = 250
TAGS_REPOSITORY = "big/tags"


def repository_names(count: int) -> list[str]:
    names = []
    for i in range(count):
        ns, j = divmod(i, PER_NAMESPACE)
        leaf = ("app-", "svc.", "lib_", "x")[j % 4] + str(j)
        name = f"team-{ns:04d}/{leaf}"
        if j % 50 == 49:  # nested below a sibling repository
            name = f"team-{ns:04d}/app-{j - 1}/sub"
        names.append(name)
    return names


def generate(root: Path, repositories: int, tags: int) -> list[str]:
    """registry:2's layout under ``root``: one manifest blob, tagged in ``big/tags`` only."""
    v2 = root / "docker" / "registry" / "v2"
    manifest = (
        b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":'
        b'{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:'
        b'44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}'
    )
    hexdigest = hashlib.sha256(manifest).hexdigest()
    blob = v2 / "blobs" / "sha256" / hexdigest[:2] / hexdigest
    blob.mkdir(parents=True)
    (blob / "data").write_bytes(manifest)
    link = f"sha256:{hexdigest}".encode()

    def tag(repo: Path, name: str) -> None:
        current = repo / "_manifests" / "tags" / name / "current"
        current.mkdir(parents=True)
        (current / "link").write_bytes(link)

    # The catalog of either registry looks for a repository's ``_manifests`` folder and no further.
    names = repository_names(repositories)
    base = str(v2 / "repositories")
    for name in names:
        os.makedirs(f"{base}/{name}/_manifests", exist_ok=True)
    repo = v2 / "repositories" / TAGS_REPOSITORY
    (repo / "_manifests" / "revisions" / "sha256" / hexdigest).mkdir(parents=True)
    (repo / "_manifests" / "revisions" / "sha256" / hexdigest / "link").write_bytes(link)
    for i in range(tags):
        tag(repo, ("v", "1.", "rc-", "b_")[i % 4] + str(i))
    return sorted([*names, TAGS_REPOSITORY])


def latency(client: httpx.Client, url: str, requests: int) -> float:
    """Median seconds of ``requests`` sequential GETs (after one unmeasured)."""
    client.get(url).raise_for_status()
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        r = client.get(url)
        times.append(time.perf_counter() - start)
        r.raise_for_status()
    return statistics.median(times)


def run(
    registry_bin: str,
    start_berth: Callable[..., Any],
    stop_berth: Callable[[Any], None],
    config_template: str,
    free_port: Callable[[], int],
    wait_ready: Callable[[str, subprocess.Popen[bytes]], None],
    repositories: int = 100_000,
    tags: int = 10_000,
    requests: int = 20,
    rounds: int = 2,
) -> str:
    tmp = Path(tempfile.mkdtemp(prefix="berth-bench-listing-"))
    procs: list[subprocess.Popen[bytes]] = []
    berth = None
    try:
        started = time.monotonic()
        names = generate(tmp / "storage", repositories, tags)
        print(f"listing: wrote {repositories} repositories and {tags} tags in {time.monotonic() - started:.0f}s", flush=True)
        port = free_port()
        config = tmp / "config.yml"
        config.write_text(config_template.format(root=tmp / "storage", port=port), encoding="utf-8")
        with open(tmp / "registry.log", "wb") as log_file:
            procs.append(
                subprocess.Popen([registry_bin, "serve", str(config)], stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            )
        reference = f"http://127.0.0.1:{port}"
        wait_ready(reference, procs[0])
        berth = start_berth(extra_env={"REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp / "storage")})
        middle = names[len(names) // 2]
        tag_names = sorted(("v", "1.", "rc-", "b_")[i % 4] + str(i) for i in range(tags))
        rows = [
            ("catalog, first page (n=100)", "/v2/_catalog?n=100"),
            ("catalog, a middle page (n=100&last=)", f"/v2/_catalog?n=100&last={middle}"),
            ("tags, first page (n=100)", f"/v2/{TAGS_REPOSITORY}/tags/list?n=100"),
            ("tags, a middle page (n=100&last=)", f"/v2/{TAGS_REPOSITORY}/tags/list?n=100&last={tag_names[len(tag_names) // 2]}"),
        ]
        targets = {"berth": berth.url, "registry2": reference}
        samples: dict[tuple[str, str], list[float]] = {}
        with httpx.Client(timeout=120, trust_env=False) as client:
            for round_ in range(rounds):
                order = list(targets) if round_ % 2 == 0 else list(reversed(targets))
                for label, path in rows:
                    for target in order:
                        samples.setdefault((label, target), []).append(latency(client, targets[target] + path, requests))
        lines = [
            f"Listing: {repositories} repositories, {tags} tags, one tree on disk; median latency of "
            f"{requests} GETs x {rounds} rounds; ratio = registry2 / berth (>1.00x = Berth faster)",
            f"{'row':40} {'berth':>10} {'registry2':>10} {'ratio':>8}",
        ]
        for label, _ in rows:
            b = statistics.median(samples[(label, "berth")])
            r = statistics.median(samples[(label, "registry2")])
            lines.append(f"{label:40} {b * 1000:8.1f}ms {r * 1000:8.1f}ms {r / b:7.2f}x")
        return "\n".join(lines)
    finally:
        if berth is not None:
            stop_berth(berth)
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":  # pragma: no cover - `python bench/run.py --listing-only` is the entry point
    raise SystemExit("run: python bench/run.py --listing-only")
