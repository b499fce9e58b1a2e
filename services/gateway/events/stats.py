"""Counters of one notification endpoint, for tests and diagnostics; ``Endpoint`` mirrors them into
the Prometheus metrics (``berth_notification*``, services.common.metrics) that ``/metrics`` shows.

Plain integers, changed only on the gateway's event loop (``Endpoint.offer`` and its worker), so no
lock is needed; ``snapshot`` gives a copy that is safe to serialise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class EndpointStats:
    name: str
    # The endpoint's URL without credentials or query (safe to show).
    url: str
    queue_size: int
    # Events accepted for this endpoint (after its ignore rules).
    queued: int = 0
    # Events waiting, including the batch being delivered.
    pending: int = 0
    # Events the endpoint acknowledged (2xx/3xx).
    delivered: int = 0
    # POSTs that failed (error status, timeout, refused connection); each retry counts.
    failed_attempts: int = 0
    # Events dropped because the queue was full (the oldest go first).
    dropped: int = 0
    # Events still pending when the gateway stopped.
    abandoned: int = 0
    # True after ``threshold`` failures in a row, until a delivery succeeds.
    down: bool = False

    def snapshot(self) -> dict[str, Any]:
        return asdict(self)
