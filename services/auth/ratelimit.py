"""Failed logins, limited per account and per source address.

Both keys count: guessing one account's password from many addresses is stopped by the account
counter, trying many accounts from one address by the address counter. Once a key has
``attempts`` failures within the last ``window`` seconds, every login it is part of is refused
with 429 *before* the password is checked, so a blocked guesser learns nothing (not even whether
the password was right) and costs no bcrypt time.

Counts live in the process (``FailureLimiter``), or, when the shared ``cache`` Redis is configured,
in Redis (``SharedFailureLimiter``), so every replica of the token service sees every failure. Redis
being down must not let a guesser through, nor lock everyone out: the shared limiter then falls
back to its own in-process counts (which it keeps all along), and tries Redis again a few seconds
later.

A successful login does not reset the counters; the window alone heals them. That way an attacker
cannot interleave guesses with logins it knows succeed, and the behaviour is easy to predict.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

import redis
from cachetools import LRUCache
from redis.exceptions import RedisError

from services.common import redis_clients
from services.common.config import RateLimitSettings, RedisSettings

log = logging.getLogger("berth.auth")

# At most this many keys are remembered; beyond it the least recently used are forgotten.
MAX_KEYS = 100_000


class Limiter(Protocol):
    def retry_after(self, keys: Iterable[str]) -> int | None: ...

    def record_failure(self, keys: Iterable[str]) -> None: ...


def create(limits: RateLimitSettings, shared: RedisSettings | None = None) -> Limiter:
    """Counts shared through Redis when ``shared`` (the ``cache`` section) names one, else per process."""
    if shared is not None and shared.enabled:
        return SharedFailureLimiter(limits.attempts, limits.window, shared)
    return FailureLimiter(limits.attempts, limits.window)


class FailureLimiter:
    def __init__(self, attempts: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.attempts = attempts
        self.window = window
        self.clock = clock
        self._failures: LRUCache[str, deque[float]] = LRUCache(maxsize=MAX_KEYS)
        self._lock = threading.Lock()  # an LRUCache is not thread-safe

    def retry_after(self, keys: Iterable[str]) -> int | None:
        """Seconds until the most blocked of ``keys`` may try again; None if none is blocked."""
        now = self.clock()
        waits = []
        with self._lock:
            for key in keys:
                times = self._recent(key, now)
                if times is not None and len(times) >= self.attempts:
                    # Free again once enough failures have left the window.
                    waits.append(times[len(times) - self.attempts] + self.window - now)
        return max(1, math.ceil(max(waits))) if waits else None

    def record_failure(self, keys: Iterable[str]) -> None:
        now = self.clock()
        with self._lock:
            for key in keys:
                times = self._recent(key, now)
                if times is None:
                    times = self._failures[key] = deque()
                times.append(now)
                while len(times) > self.attempts:  # older failures no longer decide anything
                    times.popleft()

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times


# Redis keys: one sorted set of failure times (ms, Redis's clock) per counter, at most ``attempts``
# long, expiring ``window`` after its last failure.
REDIS_PREFIX = "berth:login-failures:"

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window, attempts = tonumber(ARGV[1]), tonumber(ARGV[2])
local since = string.format('%d', now - window)
"""

# ARGV[3]: an id unique to this call (members must differ even within one millisecond).
_RECORD = (
    _NOW_MS
    + """
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', since)
  redis.call('ZADD', key, now, ARGV[3] .. ':' .. i)
  redis.call('ZREMRANGEBYRANK', key, 0, -(attempts + 1))
  redis.call('PEXPIRE', key, window)
end
return 0
"""
)

# Milliseconds until the most blocked key may try again; -1 if none is blocked.
_RETRY_AFTER = (
    _NOW_MS
    + """
local wait = -1
for _, key in ipairs(KEYS) do
  local recent = redis.call('ZRANGEBYSCORE', key, '(' .. since, '+inf', 'WITHSCORES')
  local n = #recent / 2
  if n >= attempts then
    wait = math.max(wait, tonumber(recent[(n - attempts) * 2 + 2]) + window - now)
  end
end
return wait
"""
)

# Seconds between tries of a Redis that failed; meanwhile the in-process counts decide.
REDIS_RETRY = 5.0


class SharedFailureLimiter:
    """FailureLimiter's rules with the counts in Redis, shared by every replica.

    The clock is Redis's (replicas' clocks may differ); calls wait at most the section's
    ``timeout``. Needs Redis 5 or later (scripts that read the time before writing)."""

    def __init__(self, attempts: int, window: float, settings: RedisSettings, client: redis.Redis | None = None) -> None:
        self.attempts = attempts
        self.window_ms = int(window * 1000)
        self.local = FailureLimiter(attempts, window)
        self.redis = client or redis_clients.sync_client(settings)
        self.where = f"{settings.host}:{settings.port}"
        self._record = self.redis.register_script(_RECORD)
        self._retry_after = self.redis.register_script(_RETRY_AFTER)
        self._down_since: float | None = None
        self._next_try = 0.0
        self._lock = threading.Lock()

    def retry_after(self, keys: Iterable[str]) -> int | None:
        keys = list(keys)
        if self._usable():
            try:
                wait_ms = int(self._retry_after(keys=[REDIS_PREFIX + k for k in keys], args=[self.window_ms, self.attempts]))
            except (RedisError, OSError) as exc:
                self._failed(exc)
            else:
                self._answered()
                return None if wait_ms < 0 else max(1, math.ceil(wait_ms / 1000))
        return self.local.retry_after(keys)

    def record_failure(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        # Counted here as well, so the fallback knows the recent past when Redis goes away.
        self.local.record_failure(keys)
        if not self._usable():
            return
        try:
            self._record(keys=[REDIS_PREFIX + k for k in keys], args=[self.window_ms, self.attempts, secrets.token_hex(8)])
        except (RedisError, OSError) as exc:
            self._failed(exc)
        else:
            self._answered()

    def _usable(self) -> bool:
        return self._down_since is None or time.monotonic() >= self._next_try

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            now = time.monotonic()
            self._next_try = now + REDIS_RETRY
            if self._down_since is not None:
                return
            self._down_since = now
        log.warning(
            "failed-login counters: Redis at %s unavailable (%s: %s); counting in this process until it answers",
            self.where,
            type(exc).__name__,
            exc,
        )

    def _answered(self) -> None:
        if self._down_since is None:
            return
        with self._lock:
            since, self._down_since = self._down_since, None
        if since is not None:
            log.info("failed-login counters: Redis at %s available again after %.1f s", self.where, time.monotonic() - since)


def login_keys(account: str | None, address: str | None) -> list[str]:
    """The counters one login attempt is part of (account names are capped: keys stay small)."""
    keys = []
    if account:
        keys.append(f"account:{account[:256]}")
    if address:
        keys.append(f"address:{address}")
    return keys
