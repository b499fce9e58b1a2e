"""The request-rate load generator: C connections doing back-to-back requests for a fixed time or
request count, in threads and optionally several processes, all released at once after an untimed
warm-up; it returns the raw counts and latencies (``RateRun``), the workload turns them into figures.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from bench.distribution_client import BenchError, expect


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
