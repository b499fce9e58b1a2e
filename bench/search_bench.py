#!/usr/bin/env python3
"""Search latency over a large index: 100,000 repositories by default, on SQLite (the default
backend) and, when Debian's PostgreSQL server binaries are installed, on a throwaway PostgreSQL.

Why synthetic data: the shape that matters is the number of repositories and how many match a
query, so names and descriptions are drawn from a small vocabulary, which makes some queries match
a quarter of all repositories (the costly case: counted in full, ranked, paged) and others a handful.
Each query runs ``--rounds`` times on the index directly (``Index.search``: what the database
costs) and through the search service's ``GET /v1/search`` over HTTP (what a client sees, minus
the gateway's forwarding hop); p50, p95 and max are printed in milliseconds.

    python bench/search_bench.py                 # 100,000 repositories, SQLite (+ PostgreSQL)
    python bench/search_bench.py --count 20000 --no-postgres
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from services.common.search_query import SearchQuery  # noqa: E402
from services.search import textmatch  # noqa: E402
from services.search.index import Index, fold  # noqa: E402
from services.search.schema import repositories, tags  # noqa: E402

# One string split into words: easier to edit as text than a list literal.
WORDS = (  # noqa: SIM905
    "alpine nginx redis postgres python node golang java rust web api server proxy cache worker queue "
    "db tools build base runtime debug slim static metrics agent gateway auth search store edge core "
    "data ml model"
).split()
DIGEST = "sha256:" + "0" * 64

# (what it shows, query): exact name, rare and common substrings, description words, short ones.
# The exact name is filled in from the data (``queries``).
QUERIES = [
    ("exact name", ""),
    ("name prefix", "nginx1"),
    ("common word (~25%)", "server"),
    ("rare substring", "redis-api"),
    ("two words", "slim metrics"),
    ("no match", "zzzz"),
    ("one character", "a"),
    ("two characters", "ng"),
    ("wildcard text", "100%_"),
    ("empty (all)", ""),
]


def queries(entries: list[tuple[str, str]]) -> list[tuple[str, str]]:
    exact = entries[len(entries) // 2][0]
    return [(what, exact if what == "exact name" else q) for what, q in QUERIES]


def synthetic(count: int, seed: int = 1) -> list[tuple[str, str]]:
    """``count`` (name, description) pairs; names are unique."""
    rnd = random.Random(seed)
    out = []
    for i in range(count):
        name = f"{rnd.choice(WORDS)}{i % 997}/{rnd.choice(WORDS)}-{rnd.choice(WORDS)}-{i}"
        description = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(4, 12))).capitalize() + "."
        out.append((name, description))
    return out


def populate(index: Index, entries: list[tuple[str, str]], batch: int = 10_000) -> None:
    """Bulk-loads visible repositories (one tag each), around Index's per-event writes, which
    would take minutes for 100,000; then refreshes the text index and planner statistics."""
    now = time.time()
    with index.writing() as conn:
        first = int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(repositories.c.id), 0))).scalar_one()) + 1
        for start in range(0, len(entries), batch):
            rows = [
                {
                    "id": first + start + i,
                    "name": name,
                    "name_lower": fold(name),
                    "description": description,
                    "haystack": fold(f"{name}\n{description}"),
                    "description_at": now,
                    "last_push": now,
                    "pull_count": 0,
                    "tag_count": 1,
                }
                for i, (name, description) in enumerate(entries[start : start + batch])
            ]
            conn.execute(repositories.insert(), rows)
            conn.execute(tags.insert(), [{"repository_id": r["id"], "tag": "latest", "digest": DIGEST, "pushed_at": now} for r in rows])
        textmatch.rebuild(conn)
    if index.engine.dialect.name == "postgresql":
        with index.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as auto:
            auto.exec_driver_sql("VACUUM ANALYZE")
    else:
        with index.writing() as conn:
            conn.exec_driver_sql("ANALYZE")


def timings(run: Callable[[], object], rounds: int) -> list[float]:
    run()  # warm caches and connections
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        out.append((time.perf_counter() - start) * 1000)
    return out


def report(label: str, rows: list[tuple[str, str, int, list[float]]]) -> float:
    print(f"\n{label}")
    print(f"  {'query':<22} {'text':<30} {'matches':>8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    worst = 0.0
    for what, q, total, ms in rows:
        p95 = statistics.quantiles(ms, n=20)[18] if len(ms) >= 20 else max(ms)
        worst = max(worst, p95)
        print(f"  {what:<22} {repr(q)[:30]:<30} {total:>8} {statistics.median(ms):>8.1f} {p95:>8.1f} {max(ms):>8.1f}")
    return worst


def bench_index(index: Index, wanted: list[tuple[str, str]], rounds: int) -> list[tuple[str, str, int, list[float]]]:
    rows = []
    for what, q in wanted:
        query = SearchQuery(q, 25, 1)
        total = index.search(query)[0]
        rows.append((what, q, total, timings(functools.partial(index.search, query), rounds)))
    return rows


def bench_http(url: str, wanted: list[tuple[str, str]], rounds: int, workdir: Path) -> list[tuple[str, str, int, list[float]]]:
    """The same queries through ``berth search`` on a free port over the same database."""
    from tests.support.processes import free_port, wait_for_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env.update(REGISTRY_SEARCH_ADDR=f"127.0.0.1:{port}", REGISTRY_SEARCH_DATABASE=url, REGISTRY_LOGLEVEL="warning")
    with open(workdir / "search.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "services.cli", "search"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc)
        rows = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for what, q in wanted:

                def get(q: str = q) -> httpx.Response:
                    response = client.get("/v1/search", params={"q": q, "n": 25})
                    response.raise_for_status()
                    return response

                rows.append((what, q, get().json()["num_results"], timings(get, rounds)))
        return rows
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def run_backend(label: str, url: str, entries: list[tuple[str, str]], rounds: int, workdir: Path) -> float:
    index = Index.open(url)
    try:
        start = time.perf_counter()
        populate(index, entries)
        print(f"\n{label}: {len(entries):,} repositories loaded in {time.perf_counter() - start:.1f} s")
        worst = report(f"{label}, Index.search (database only)", bench_index(index, queries(entries), rounds))
    finally:
        index.close()
    http = bench_http(url, queries(entries), rounds, workdir)
    return max(worst, report(f"{label}, GET /v1/search on the search service (HTTP)", http))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=int(os.environ.get("BENCH_SEARCH_COUNT", 100_000)))
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args(argv)

    entries = synthetic(args.count)
    worst: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="berth-search-bench-") as tmp:
        workdir = Path(tmp)
        worst["sqlite"] = run_backend("SQLite", f"sqlite:///{workdir / 'index.db'}", entries, args.rounds, workdir)
        if not args.no_postgres:
            from tests.support.postgres import PostgresCluster, find_bin_dir

            bin_dir = find_bin_dir()
            if bin_dir is None:
                print("\nPostgreSQL: skipped (no initdb/pg_ctl under /usr/lib/postgresql/*/bin; apt-get install postgresql)")
            else:
                cluster = PostgresCluster(bin_dir).start()
                try:
                    worst["postgresql"] = run_backend(
                        f"PostgreSQL ({bin_dir.parent.name})", cluster.create_database(), entries, args.rounds, workdir
                    )
                finally:
                    cluster.stop()
    print("\nworst p95: " + ", ".join(f"{name} {ms:.1f} ms" for name, ms in worst.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
