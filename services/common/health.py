"""Liveness and readiness endpoints, the same on every HTTP service.

    GET /, /_ping, /v1/_ping   200 while the process serves requests (liveness). ``{}``, or the
                               service's own facts (the gateway's ``"readonly": true``); with
                               ``debug: true`` also versions and host details, as the classic
                               registry's /_ping had them.
    GET /_ready                200 when the service's dependencies answer, else 503 naming the
                               failing check (readiness: take this replica out of rotation).

They are served at the root whatever ``http.prefix`` says (probes are configured per port, not per
path prefix), before any other route, and never ask for credentials.

Each service hands ``install`` its own checks, kept in its ``health_checks.py`` (the blobstore,
which serves no FastAPI app, has its own blocking check there and answers on its
``http_listener.py``). A check is an async callable that returns when its dependency is usable and
raises otherwise. A non-critical check is reported but never fails readiness: a dependency whose
loss degrades one feature (search, for the gateway) should not take every replica out of rotation
at once. Checks run concurrently, each bounded by its timeout, and probes arriving while a check is
still running share that run, so a hung database costs one pending check, not one per probe.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
import platform
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

log = logging.getLogger("berth.health")

# Libraries whose versions the debug /_ping reports (those installed).
_LIBRARIES = ("fastapi", "starlette", "uvicorn", "pydantic", "grpcio", "protobuf", "httpx", "sqlalchemy", "cryptography", "pyjwt")
_NO_STORE = {"Cache-Control": "no-store"}


class CheckFailed(Exception):
    """A failure whose message is fit for the /_ready body (no addresses, no secrets); any other
    exception shows there as its class name only, its message going to the log."""


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[], Awaitable[None]]
    # False: reported, but readiness holds without it.
    critical: bool = True
    # Seconds before the check counts as failed; keep the sum under the probe's own timeout.
    timeout: float = 2.0


@dataclass
class _Runner:
    """Runs the checks, sharing runs still in flight and logging changes of state only (probes
    come every few seconds; a line per probe would bury everything else)."""

    checks: Sequence[Check]
    running: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    failing: dict[str, str] = field(default_factory=dict)

    async def run(self) -> dict[str, str]:
        results = await asyncio.gather(*(self._one(check) for check in self.checks))
        return {check.name: result for check, result in zip(self.checks, results, strict=True)}

    async def _one(self, check: Check) -> str:
        task = self.running.get(check.name)
        if task is None or task.done():
            task = asyncio.ensure_future(check.run())
            # A run that outlives its probe still has its failure collected (no "never retrieved").
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            self.running[check.name] = task
        try:
            await asyncio.wait_for(asyncio.shield(task), check.timeout)
            result, detail = "ok", ""
        except TimeoutError:
            result, detail = f"timed out after {check.timeout:g}s", ""
        except CheckFailed as exc:
            result, detail = f"failed: {exc}"[:200], ""
        except Exception as exc:  # noqa: BLE001 - any failure means "not usable"; the reason is logged
            result, detail = f"failed: {type(exc).__name__}", str(exc)[:300]
        self._note(check, result, detail)
        return result

    def _note(self, check: Check, result: str, detail: str) -> None:
        before = self.failing.get(check.name)
        if result == "ok":
            if before is not None:
                self.failing.pop(check.name)
                log.info("readiness check %s: ok again", check.name)
        elif before != result:
            self.failing[check.name] = result
            log.warning(
                "readiness check %s%s: %s%s",
                check.name,
                "" if check.critical else " (non-critical)",
                result,
                f" ({detail})" if detail else "",
            )


def install(
    app: FastAPI,
    service: str,
    *,
    debug: bool,
    checks: Sequence[Check] = (),
    prefix: str = "",
    facts: Mapping[str, Any] | None = None,
    ping_headers: Mapping[str, str] | None = None,
) -> None:
    """Adds the endpoints to ``app``; call it before the service's own routes so these win.

    ``prefix``: also serve them under it (``http.prefix``), where the gateway's own routes live.
    ``facts``: what /_ping says whatever ``debug`` says: a state an operator must see at a glance,
    such as a gateway refusing writes.
    ``ping_headers``: added to every /, /_ping and /v1/_ping answer (the gateway's v1 registry
    headers, which the docker daemon reads before it sends credentials to /v1/search).
    """
    started_wall, started = datetime.now(UTC), time.monotonic()
    versions = _versions() if debug else {}
    runner = _Runner(checks)
    said = dict(facts or {})
    ping_answer_headers = {**_NO_STORE, **(ping_headers or {})}

    async def ping(request: Request) -> Response:
        if not debug:
            return JSONResponse(said, headers=ping_answer_headers)
        return JSONResponse(
            {
                **said,
                "service": service,
                "versions": versions,
                "host": {
                    "hostname": socket.gethostname(),
                    "platform": platform.platform(),
                    "pid": os.getpid(),
                    "started": started_wall.isoformat(timespec="seconds").replace("+00:00", "Z"),
                    "uptime": round(time.monotonic() - started, 1),
                },
            },
            headers=ping_answer_headers,
        )

    async def ready(request: Request) -> Response:
        results = await runner.run()
        failed = [c.name for c in checks if c.critical and results[c.name] != "ok"]
        body: dict[str, Any] = {"ready": not failed, "checks": results}
        if failed:
            body["failed"] = failed
        return JSONResponse(body, status_code=503 if failed else 200, headers=_NO_STORE)

    for base in dict.fromkeys(("", prefix)):
        for path in (base + "/" if base else "/", f"{base}/_ping", f"{base}/v1/_ping"):
            app.add_api_route(path, ping, methods=["GET", "HEAD"], include_in_schema=False, name=f"health:ping:{path}")
        app.add_api_route(f"{base}/_ready", ready, methods=["GET", "HEAD"], include_in_schema=False, name=f"health:ready:{base}")


def sql_check(engine: Any) -> Callable[[], Awaitable[None]]:
    """``SELECT 1`` on a SQLAlchemy engine, in a thread (the driver blocks)."""
    from sqlalchemy import text

    def select_one() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    async def check() -> None:
        await asyncio.to_thread(select_one)

    return check


def _versions() -> dict[str, str]:
    found = {"berth": _version("berth"), "python": sys.version.split()[0]}
    for name in _LIBRARIES:
        version = _version(name)
        if version != "unknown":
            found[name] = version
    return found


def berth_version() -> str:
    """Berth's own version (the installed distribution's), "0" when it is not installed."""
    found = _version("berth")
    return "0" if found == "unknown" else found


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
