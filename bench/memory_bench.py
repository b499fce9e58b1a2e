"""The memory rows of `make bench`: peak and per-repetition RSS of each process while one large
blob (4 GiB by default) is pushed (monolithic PUT, streamed) and pulled (GET, sha256 checked on
the fly), several times over, through Berth and through the Go registry.

Why per repetition: a leak shows as RSS growing from one repetition to the next, which a single
peak hides. Berth's budget (docs/architecture.md, issue 16) is gateway + blobstore < 200 MiB
together; registry:2 is the reference. RSS is read from /proc (VmRSS after each repetition,
VmHWM for the peak), so nothing is sampled while the bytes flow.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx

from bench.distribution_client import BenchError, expect, location, with_digest
from bench.image_content import OCTET, MiB, RandomBlob


def _status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} for pid {pid}")


@dataclass
class MemorySample:
    """One registry's processes (name → pid) and their RSS (MiB) after each repetition."""

    label: str
    pids: dict[str, int]
    after: list[dict[str, float]] = field(default_factory=list)
    peak: dict[str, float] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)

    def record(self) -> None:
        self.after.append({name: _status_kib(pid, "VmRSS") / 1024 for name, pid in self.pids.items()})
        self.peak = {name: _status_kib(pid, "VmHWM") / 1024 for name, pid in self.pids.items()}


def push_monolithic(client: httpx.Client, base: str, repo: str, blob: RandomBlob) -> None:
    """POST, then one PUT carrying the whole blob, streamed (Content-Length set: no chunking)."""
    answer = client.post(f"{base}/v2/{repo}/blobs/uploads/")
    expect(answer, 202, what="POST blob upload")
    url = with_digest(location(answer, base), blob.digest)
    answer = client.put(url, content=blob.pieces(), headers={"Content-Type": OCTET, "Content-Length": str(blob.size)})
    expect(answer, 201, what="PUT blob")


def pull_checked(client: httpx.Client, base: str, repo: str, blob: RandomBlob) -> None:
    digest = hashlib.sha256()
    got = 0
    with client.stream("GET", f"{base}/v2/{repo}/blobs/{blob.digest}") as answer:
        expect(answer, 200, what="GET blob")
        for part in answer.iter_bytes(MiB):
            digest.update(part)
            got += len(part)
    if got != blob.size or "sha256:" + digest.hexdigest() != blob.digest:
        raise BenchError(f"pulled blob differs: {got} bytes")


def measure(label: str, base: str, pids: dict[str, int], blob: RandomBlob, repetitions: int, clock: Callable[[], float]) -> MemorySample:
    sample = MemorySample(label, pids)
    with httpx.Client(timeout=600, follow_redirects=True, trust_env=False) as client:
        for n in range(repetitions):
            started = clock()
            push_monolithic(client, base, f"bench/memory-{n}", blob)
            pull_checked(client, base, f"bench/memory-{n}", blob)
            sample.seconds.append(clock() - started)
            sample.record()
    return sample


def render(samples: Sequence[MemorySample], size_mb: int, budget_mb: float = 200.0) -> str:
    lines = [f"memory: one {size_mb} MiB blob pushed and pulled per repetition; RSS in MiB after each repetition, and the peak (VmHWM)"]
    repetitions = " ".join(f"{'rep ' + str(i + 1):>8}" for i in range(len(samples[0].after)))
    header = f"{'registry':<16} {'process':<10} {repetitions} {'peak':>8}"
    lines += [header, "-" * len(header)]
    for s in samples:
        names = list(s.pids)
        rows = [(name, [rep[name] for rep in s.after], s.peak[name]) for name in names]
        if len(names) > 1:
            rows.append(("together", [sum(rep.values()) for rep in s.after], sum(s.peak.values())))
        for name, reps, peak in rows:
            lines.append(f"{s.label:<16} {name:<10} " + " ".join(f"{v:8.1f}" for v in reps) + f" {peak:8.1f}")
    for s in samples:
        if len(s.pids) > 1:
            together = sum(s.peak.values())
            growth = sum(s.after[-1].values()) - sum(s.after[0].values())
            verdict = "within" if together < budget_mb else "OVER"
            lines.append(
                f"{s.label}: peak together {together:.1f} MiB ({verdict} the {budget_mb:.0f} MiB budget); "
                f"RSS change from the first to the last repetition {growth:+.1f} MiB; "
                f"{size_mb * 2 / (sum(s.seconds) / len(s.seconds)):.0f} MiB/s push+pull"
            )
        else:
            lines.append(
                f"{s.label}: peak {sum(s.peak.values()):.1f} MiB; {size_mb * 2 / (sum(s.seconds) / len(s.seconds)):.0f} MiB/s push+pull"
            )
    return "\n".join(lines)
