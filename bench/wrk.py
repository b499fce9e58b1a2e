"""Request-rate runs through wrk, when it is installed.

A Python load generator saturates a core of its own long before a registry does (on a 2-core
machine it measures itself); wrk, written in C, leaves the CPU to the servers being compared.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def available() -> bool:
    return shutil.which("wrk") is not None


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def run(method: str, url: str, headers: dict[str, str], connections: int, duration: float) -> dict[str, float]:
    """requests/s, p50 and p99 latency (ms) of ``method url`` for ``duration`` seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "method.lua"
        script.write_text(f'wrk.method = "{method}"\n')
        cmd = ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency", "-s", str(script)]
        for name, value in headers.items():
            cmd += ["-H", f"{name}: {value}"]
        out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if not (rps and p50 and p99):
        raise RuntimeError(f"could not read wrk output:\n{out}")
    if errors:
        raise RuntimeError(f"{errors.group(1)} requests failed under wrk")
    return {"rps": float(rps.group(1)), "p50": _ms(p50.group(1)), "p99": _ms(p99.group(1))}
