"""Failed logins, limited per account and per source address.

Both keys count: guessing one account's password from many addresses is stopped by the account
counter, trying many accounts from one address by the address counter. Once a key has
``attempts`` failures within the last ``window`` seconds, every login it is part of is refused
with 429 *before* the password is checked, so a blocked guesser learns nothing (not even whether
the password was right) and costs no bcrypt time. Counts live in the process: each replica keeps
its own, which bounds an attacker per replica.

A successful login does not reset the counters; the window alone heals them. That way an attacker
cannot interleave guesses with logins it knows succeed, and the behaviour is easy to predict.
"""
from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable

# At most this many keys are remembered; beyond it the least recently failing are forgotten.
MAX_KEYS = 100_000


class FailureLimiter:
    def __init__(self, attempts: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.attempts = attempts
        self.window = window
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

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
                self._failures.move_to_end(key)
            while len(self._failures) > MAX_KEYS:
                self._failures.popitem(last=False)

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


def login_keys(account: str | None, address: str | None) -> list[str]:
    """The counters one login attempt is part of (account names are capped: keys stay small)."""
    keys = []
    if account:
        keys.append(f"account:{account[:256]}")
    if address:
        keys.append(f"address:{address}")
    return keys
