"""The garbage-collection row: mark+sweep time of ``berth garbage-collect`` next to the Go
registry's ``docker-registry garbage-collect`` on the same tree.

The tree is written straight to disk in registry:2's layout (the one both registries read), not
pushed: ``manifests`` image manifests (Docker schema 2) spread over repositories of
``per_repo`` each, every one with its own config and ``layers_per`` layers, some layers shared
by the repository's images; the remaining blobs up to ``blobs`` are orphans nothing references,
so the sweep has work. Every tag points at one manifest. Each run collects a freshly generated
tree (the generator is deterministic; generating is not timed and is faster than copying), offline
(``--delay 0`` for Berth: registry:2's result), and is checked: both must leave the same blobs.

    python bench/gc_bench.py --manifests 10000 --blobs 50000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = "docker/registry/v2"
SCHEMA2 = "application/vnd.docker.distribution.manifest.v2+json"


def _put_blob(root: Path, content: bytes) -> str:
    hex_ = hashlib.sha256(content).hexdigest()
    folder = root / ROOT / "blobs" / "sha256" / hex_[:2] / hex_
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").write_bytes(content)
    return f"sha256:{hex_}"


def _link(path: Path, digest: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "link").write_text(digest)


def generate(root: Path, manifests: int, blobs: int, per_repo: int = 10, layers_per: int = 3) -> dict[str, int]:
    """Writes the tree; returns what it holds. Blob counts include the manifests themselves."""
    if blobs < manifests * 2:
        raise ValueError("need at least two blobs (manifest, config) per manifest")
    repos = (manifests + per_repo - 1) // per_repo
    kept: set[str] = set()
    for r in range(repos):
        repo = root / ROOT / "repositories" / "bench" / f"repo{r:05d}"
        shared = [_put_blob(root, f"shared layer {r}/{k}".encode()) for k in range(2)]
        for i in range(min(per_repo, manifests - r * per_repo)):
            config = _put_blob(root, json.dumps({"architecture": "amd64", "os": "linux", "n": [r, i]}).encode())
            layer_digests = [shared[i % 2]] + [_put_blob(root, f"layer {r}/{i}/{k}".encode()) for k in range(layers_per - 1)]
            doc = {
                "schemaVersion": 2,
                "mediaType": SCHEMA2,
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 0, "digest": config},
                "layers": [
                    {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 0, "digest": d} for d in layer_digests
                ],
            }
            manifest = _put_blob(root, json.dumps(doc, indent=3).encode())
            hex_ = manifest.split(":")[1]
            _link(repo / "_manifests" / "revisions" / "sha256" / hex_, manifest)
            tag = repo / "_manifests" / "tags" / f"v{i}"
            _link(tag / "current", manifest)
            _link(tag / "index" / "sha256" / hex_, manifest)
            for d in [config, *layer_digests]:
                _link(repo / "_layers" / "sha256" / d.split(":")[1], d)
            kept.update([manifest, config, *layer_digests])
    written = len(kept)
    orphans = max(0, blobs - written)
    for n in range(orphans):
        _put_blob(root, f"orphan {n}".encode())
    return {"repositories": repos, "manifests": manifests, "blobs": written + orphans, "kept": written, "orphans": orphans}


def blob_set(root: Path) -> set[str]:
    base = root / ROOT / "blobs" / "sha256"
    return {f"sha256:{h.name}" for p in base.iterdir() for h in p.iterdir() if (h / "data").exists()}


REGISTRY2_CONFIG = """\
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
"""

BERTH_CONFIG = """\
version: 0.1
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
"""


@dataclass
class Sample:
    label: str
    seconds: float
    blobs_left: int


def _timed(label: str, argv: list[str], root: Path, env: dict[str, str] | None = None) -> Sample:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, env=env, stdin=subprocess.DEVNULL, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{label}: {' '.join(argv)} exited {done.returncode}:\n{done.stderr.decode()[-2000:]}")
    return Sample(label, seconds, len(blob_set(root)))


def run(
    registry_bin: str | None, manifests: int, blobs: int, rounds: int, python: str = sys.executable, keep: bool = False
) -> tuple[dict[str, int], list[Sample]]:
    tmp = Path(tempfile.mkdtemp(prefix="berth-bench-gc-"))
    try:
        shape: dict[str, int] = {}
        samples: list[Sample] = []
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        repo_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = repo_root + os.pathsep + env.get("PYTHONPATH", "")
        for n in range(rounds):
            targets = [("berth", BERTH_CONFIG)] + ([("registry2", REGISTRY2_CONFIG)] if registry_bin else [])
            if n % 2:
                targets.reverse()
            for label, template_text in targets:
                work = tmp / f"{label}-{n}"
                started = time.perf_counter()
                shape = generate(work, manifests, blobs)  # deterministic: the same tree every time
                print(f"gc: generated {shape} in {time.perf_counter() - started:.1f}s", file=sys.stderr)
                config = tmp / f"{label}.yml"
                config.write_text(template_text.format(root=work))
                if label == "berth":
                    argv = [python, "-m", "services.cli", "--config", str(config), "garbage-collect", "--delay", "0"]
                else:
                    argv = [str(registry_bin), "garbage-collect", str(config)]
                sample = _timed(label, argv, work, env)
                samples.append(sample)
                print(f"gc: round {n + 1} {label}: {sample.seconds:.2f}s, {sample.blobs_left} blobs left", file=sys.stderr)
                shutil.rmtree(work, ignore_errors=True)
        want = shape["kept"]
        for s in samples:
            if s.blobs_left != want:
                raise RuntimeError(f"{s.label} left {s.blobs_left} blobs, {want} are referenced")
        return shape, samples
    finally:
        if keep:
            print(f"gc: kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def render(shape: dict[str, int], samples: list[Sample]) -> str:
    def median(label: str) -> float | None:
        values = [s.seconds for s in samples if s.label == label]
        return statistics.median(values) if values else None

    berth, ref = median("berth"), median("registry2")
    head = (
        f"garbage collection, offline mark+sweep, {shape['manifests']} manifests / {shape['blobs']} blobs "
        f"({shape['orphans']} unreferenced) in {shape['repositories']} repositories, filesystem; "
        f"median of {len([s for s in samples if s.label == 'berth'])} (process start included)"
    )
    lines = [head, f"{'workload':<22}{'berth':>12}{'registry2':>12}{'ratio':>10}"]
    ratio = f"{ref / berth:.2f}x" if berth and ref else "-"
    lines.append(f"{'gc mark+sweep':<22}{(f'{berth:.2f} s' if berth else '-'):>12}{(f'{ref:.2f} s' if ref else '-'):>12}{ratio:>10}")
    lines.append("ratio = registry2 time / berth time, >1.00x = Berth faster")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--registry-bin", default=os.environ.get("REGISTRY_BIN") or shutil.which("docker-registry"))
    p.add_argument("--manifests", type=int, default=10_000)
    p.add_argument("--blobs", type=int, default=50_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--keep-tmp", action="store_true")
    args = p.parse_args(argv)
    shape, samples = run(args.registry_bin, args.manifests, args.blobs, args.rounds, keep=args.keep_tmp)
    print(render(shape, samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
