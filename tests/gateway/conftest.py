"""Gateway fixtures: a client that checks the API version header on every /v2 response, and a
repository name of the test's own (the registry is shared by the whole session)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

import httpx
import pytest

from tests.support.processes import Berth
from tests.support.registry import checked_client


@pytest.fixture()
def client(berth: Berth) -> Iterator[httpx.Client]:
    """Like the session's client, but every /v2 response must carry Docker-Distribution-API-Version,
    and the test fails if either service logged a traceback (an unhandled error) meanwhile."""
    logs = {service: berth.workdir / f"{service}.log" for service in ("gateway", "blobstore")}
    start = {service: path.stat().st_size for service, path in logs.items()}
    with checked_client(berth.url) as c:
        yield c
    for service, path in logs.items():
        with path.open("rb") as log:
            log.seek(start[service])
            new = log.read().decode(errors="replace")
        assert "Traceback" not in new, f"{service} logged an unhandled error:\n{new}"


@pytest.fixture()
def repo(request: pytest.FixtureRequest) -> str:
    """A repository name no other test uses: <module>/<test id, parameters included>."""
    module = request.module.__name__.rsplit(".", 1)[-1]
    leaf = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    if len(leaf) > 120:
        leaf = f"{leaf[:100].rstrip('-')}-{hashlib.sha256(leaf.encode()).hexdigest()[:12]}"
    return f"{module}/{leaf}"
