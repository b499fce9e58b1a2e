"""How the registry benchmark reports: one row per figure (``Metric``), ratios that always read
"target speed relative to the reference, >1.00x = faster" (latency rows inverted), a mark where two
targets' rounds overlap (the difference is within the machine's noise), and a JSON copy.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench.registry_workloads import Settings, Target, TargetResult


@dataclass(frozen=True)
class Metric:
    """One table row; `higher_is_better` decides how the ratio is taken."""

    key: str
    workload: str
    title: str
    unit: str
    higher_is_better: bool


def metrics_for(s: Settings) -> list[Metric]:
    """Rows of the table, titled with the sizes actually used."""
    small = f"{s.small_count} imgs, {s.small_layer_kb:g} KiB layer"
    bound = f"{s.duration:g}s" + (f"/{s.requests} req" if s.requests else "")
    rate = f"c={s.concurrency}, {bound}"
    rows = [
        Metric("large_push", "large", f"large push ({s.large_mb:g} MiB, {s.chunk_mb:g} MiB chunks)", "MiB/s", True),
        Metric("large_pull", "large", f"large pull ({s.large_mb:g} MiB, sha256 checked)", "MiB/s", True),
        Metric("large_raw_pull", "large", f"large raw pull ({s.large_mb:g} MiB, curl, redirects followed)", "MiB/s", True),
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
            f"Ratio columns X/{ref.label} = speed of X relative to the reference {ref.label}: >1.00x means X is faster, <1.00x slower."
        )
        lines.append("(Throughput rows: X value / reference value; latency rows: reference latency / X latency.)")
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
                    m.key: ratio(m, results[t.label].values.get(m.key), results[ref.label].values.get(m.key)) for m in metrics
                },
            }
            for t in targets
        },
    }
