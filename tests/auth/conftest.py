"""Token service fixtures: one shared service (ES256, the test rules and users, two audiences, a
120 s token lifetime), and a client that fails the test if the service logged a traceback."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.auth.support import add_users, log_size, new_log, token_service
from tests.support.processes import Berth

TOKEN_TTL = 120


@pytest.fixture(scope="session")
def auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Berth]:
    berth = token_service(tmp_path_factory.mktemp("auth"), config={"services": ["berth", "other"], "token_ttl": TOKEN_TTL})
    add_users(berth)
    berth.start("auth")
    yield berth
    berth.stop()


@pytest.fixture()
def client(auth: Berth) -> Iterator[httpx.Client]:
    start = log_size(auth, "auth")
    with auth.auth_client() as c:
        yield c
    logged = new_log(auth, "auth", start)
    assert "Traceback" not in logged, f"the token service logged an unhandled error:\n{logged}"
