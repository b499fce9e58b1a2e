"""Failed logins are limited per account and per source address (429 TOOMANYREQUESTS, Retry-After).

The service listens on 127.0.0.1; clients connect from other loopback addresses (127.0.0.x) so the
two counters can be told apart.
"""
from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from services.auth.ratelimit import FailureLimiter
from tests.auth.support import SERVICE, add_users, error_code, token_service
from tests.support.processes import Berth

ATTEMPTS = 3
WINDOW = 60
USERS = {"alice": ("alice-password", []), "bob": ("bob-password", [])}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Berth]:
    berth = token_service(tmp_path_factory.mktemp("ratelimit"),
                          config={"rate_limit": {"attempts": ATTEMPTS, "window": WINDOW}})
    add_users(berth, USERS)
    berth.start("auth")
    yield berth
    berth.stop()


def get(berth: Berth, source: str, user: str, password: str) -> httpx.Response:
    with berth.auth_client(local_address=source) as client:
        return client.get("/token", params={"service": SERVICE}, auth=(user, password))


def post(berth: Berth, source: str, user: str, password: str) -> httpx.Response:
    form = {"grant_type": "password", "username": user, "password": password, "service": SERVICE, "client_id": "t"}
    with berth.auth_client(local_address=source) as client:
        return client.post("/token", data=form)


def assert_limited(r: httpx.Response) -> None:
    assert r.status_code == 429, r.text
    assert error_code(r) == "TOOMANYREQUESTS"
    assert 1 <= int(r.headers["retry-after"]) <= WINDOW
    assert "token" not in r.json() and "access_token" not in r.json()


def test_per_account_limit_holds_from_any_address(limited: Berth) -> None:
    assert get(limited, "127.0.0.2", "alice", "guess-1").status_code == 401
    assert post(limited, "127.0.0.2", "alice", "guess-2").status_code == 401
    assert get(limited, "127.0.0.2", "alice", "guess-3").status_code == 401
    # The right password, from a fresh address: the account is blocked, and says nothing more.
    assert_limited(get(limited, "127.0.0.3", "alice", "alice-password"))
    assert_limited(post(limited, "127.0.0.3", "alice", "alice-password"))
    # Another account from that address is unaffected.
    assert get(limited, "127.0.0.3", "bob", "bob-password").status_code == 200


def test_per_address_limit_holds_for_every_account(limited: Berth) -> None:
    for name in ("ghost-1", "ghost-2", "ghost-3"):  # unknown accounts count like known ones
        assert get(limited, "127.0.0.4", name, "guess").status_code == 401
    assert_limited(get(limited, "127.0.0.4", "bob", "bob-password"))
    assert get(limited, "127.0.0.5", "bob", "bob-password").status_code == 200


def test_unknown_accounts_are_blocked_like_known_ones(limited: Berth) -> None:
    for source in ("127.0.0.6", "127.0.0.7", "127.0.0.8"):
        assert get(limited, source, "nobody", "guess").status_code == 401
    assert_limited(get(limited, "127.0.0.9", "nobody", "guess"))


def test_bad_refresh_tokens_count_per_address(limited: Berth) -> None:
    with limited.auth_client(local_address="127.0.0.10") as client:
        form = {"grant_type": "refresh_token", "service": SERVICE, "client_id": "t"}
        for n in range(ATTEMPTS):
            assert client.post("/token", data={**form, "refresh_token": f"guess-{n}"}).status_code == 401
        assert_limited(client.post("/token", data={**form, "refresh_token": "guess-x"}))
    assert get(limited, "127.0.0.10", "bob", "bob-password").status_code == 429


def test_anonymous_and_successful_requests_are_not_counted(limited: Berth) -> None:
    for _ in range(ATTEMPTS + 2):
        assert get(limited, "127.0.0.11", "bob", "bob-password").status_code == 200
    with limited.auth_client(local_address="127.0.0.11") as client:
        for _ in range(ATTEMPTS + 2):
            assert client.get("/token", params={"service": SERVICE}).status_code == 200


def test_window_heals_and_retry_after_counts_down() -> None:
    now = [1000.0]
    limiter = FailureLimiter(attempts=2, window=30, clock=lambda: now[0])
    keys = ["account:a", "address:1.2.3.4"]
    limiter.record_failure(keys)
    now[0] += 10
    limiter.record_failure(["account:a"])
    assert limiter.retry_after(["account:a"]) == 20  # the first failure leaves the window at 1030
    assert limiter.retry_after(["address:1.2.3.4"]) is None  # one failure only
    now[0] += 19.5
    assert limiter.retry_after(keys) == 1
    now[0] += 0.5
    assert limiter.retry_after(keys) is None  # one failure left in the window: below the limit
    limiter.record_failure(["account:a"])
    assert limiter.retry_after(keys) == 10
