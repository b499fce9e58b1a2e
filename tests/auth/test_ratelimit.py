"""Failed logins are limited per account and per source address (429 TOOMANYREQUESTS, Retry-After).

The service listens on 127.0.0.1; clients connect from other loopback addresses (127.0.0.x) so the
two counters can be told apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.auth import ratelimit
from services.auth.ratelimit import (
    FailureLimiter,
    SharedFailureLimiter,
    create,
    login_keys,
)
from services.common.config import RateLimitSettings, RedisSettings
from tests.auth.support import SERVICE, add_users, error_code, token_service
from tests.support.processes import Berth
from tests.support.redis import RedisServer, start_redis

ATTEMPTS = 3
WINDOW = 60
USERS = {"alice": ("alice-password", []), "bob": ("bob-password", [])}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Berth]:
    berth = token_service(tmp_path_factory.mktemp("ratelimit"), config={"rate_limit": {"attempts": ATTEMPTS, "window": WINDOW}})
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


@pytest.fixture()
def shared_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = start_redis(tmp_path / "redis")
    yield server
    server.stop()


def shared_limiter(server: RedisServer, attempts: int = 3, window: int = 60) -> SharedFailureLimiter:
    settings = RedisSettings(host="127.0.0.1", port=server.port)
    limiter = create(RateLimitSettings(attempts=attempts, window=window), settings)
    assert isinstance(limiter, SharedFailureLimiter)
    return limiter


def test_replicas_sharing_redis_share_counts(shared_redis: RedisServer) -> None:
    one, two = shared_limiter(shared_redis), shared_limiter(shared_redis)
    keys = login_keys("carol", "10.0.0.1")
    one.record_failure(keys)
    two.record_failure(keys)
    assert one.retry_after(keys) is None and two.retry_after(keys) is None
    one.record_failure(["account:carol"])  # the third failure of the account, seen by either replica
    assert 59 <= (two.retry_after(keys) or 0) <= 60
    assert 59 <= (one.retry_after(["account:carol"]) or 0) <= 60
    assert two.retry_after(["address:10.0.0.1"]) is None  # two failures only
    # Each replica alone has seen fewer than three: only Redis knows.
    assert one.local.retry_after(keys) is None and two.local.retry_after(keys) is None


def test_a_down_redis_falls_back_to_the_counts_of_the_process(shared_redis: RedisServer) -> None:
    limiter = shared_limiter(shared_redis)
    keys = login_keys("dave", "10.0.0.2")
    limiter.record_failure(keys)
    limiter.record_failure(keys)
    shared_redis.stop()
    assert limiter.retry_after(keys) is None
    limiter.record_failure(keys)
    assert limiter.retry_after(keys) is not None  # three failures counted here
    assert limiter.retry_after(login_keys("erin", "10.0.0.3")) is None  # no one else is locked out


def test_without_a_shared_redis_counts_stay_in_the_process() -> None:
    assert isinstance(create(RateLimitSettings(), RedisSettings()), FailureLimiter)


def test_token_service_replicas_share_counts_through_the_cache_redis(shared_redis: RedisServer, tmp_path: Path) -> None:
    env = {"REGISTRY_CACHE_HOST": "127.0.0.1", "REGISTRY_CACHE_PORT": str(shared_redis.port)}
    replicas = []
    for name in ("one", "two"):
        berth = token_service(tmp_path / name, config={"rate_limit": {"attempts": ATTEMPTS, "window": WINDOW}}, env=env)
        add_users(berth, USERS)
        replicas.append(berth.start("auth"))
    try:
        one, two = replicas
        assert get(one, "127.0.0.12", "alice", "guess-1").status_code == 401
        assert get(two, "127.0.0.13", "alice", "guess-2").status_code == 401
        assert get(one, "127.0.0.14", "alice", "guess-3").status_code == 401
        assert_limited(get(two, "127.0.0.15", "alice", "alice-password"))
        assert get(two, "127.0.0.15", "bob", "bob-password").status_code == 200
    finally:
        for berth in replicas:
            berth.stop()


def test_the_per_process_limiter_forgets_the_least_recently_used_keys_beyond_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimit, "MAX_KEYS", 3)
    limiter = FailureLimiter(attempts=1, window=60, clock=lambda: 100.0)
    for key in ("a", "b", "c"):
        limiter.record_failure([key])
    assert limiter.retry_after(["a"]) == 60  # a is now the most recently used
    limiter.record_failure(["d"])  # evicts b, the least recently used
    assert limiter.retry_after(["b"]) is None
    assert all(limiter.retry_after([key]) == 60 for key in ("a", "c", "d"))
