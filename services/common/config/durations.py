"""Durations as registry:2 writes them (Go's ``time.ParseDuration``): ``1s``, ``500ms``, ``1m30s``,
``168h``; plain numbers are seconds, as Berth and the classic registry write them."""

from __future__ import annotations

import re
from typing import Any

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse(text: str) -> float:
    """Seconds in a Go duration; ValueError for anything else."""
    text = text.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if body == "0":
        return 0.0
    pos, total = 0, 0.0
    for match in _PART.finditer(body):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not body or pos != len(body):
        raise ValueError(f"not a duration: {text!r} (a number of seconds, or Go's form: 1s, 500ms, 1m30s, 168h)")
    return sign * total


def to_seconds(value: Any) -> Any:
    """A pydantic before-validator: numbers and numeric strings pass, Go durations become seconds."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return parse(value)
    return value
