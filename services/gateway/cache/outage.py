"""Whether the gateway may use Redis right now, and what it owes Redis before it may again.

Kept apart from the Redis calls so the one rule that keeps data fresh across outages is easy to
check: after any failure nothing is read from Redis until every invalidation that could not be
sent has been re-sent (or, past ``MAX_MISSED``, the whole cache dropped).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from services.common.metrics import CACHE_UP

log = logging.getLogger("berth.gateway.cache")

# Probes of a Redis that is down: the first soon, then less often.
FIRST_PROBE = 0.25
LAST_PROBE = 2.0
# Invalidations remembered during an outage; beyond this the cache is dropped on return instead.
MAX_MISSED = 10_000


class Invalidation(NamedTuple):
    repository: str
    what: str  # "tag", "manifest" or "blob"
    name: str  # the tag or digest


# Re-sends what was missed (dropping every key first when asked); raises if Redis still fails.
Repair = Callable[[list[Invalidation], bool], Awaitable[None]]


class Outage:
    def __init__(self, repair: Repair, where: str) -> None:
        self._repair = repair
        self._where = where
        self._up = True
        self._confirmed = False  # the gauge is set once Redis has answered
        # Each invalidation once, with the number of its latest miss: one missed again while being
        # re-sent stays owed.
        self._missed: dict[Invalidation, int] = {}
        self._misses = 0
        self._drops_asked = 0
        self._drops_done = 0
        self._since = 0.0
        self._probe: asyncio.Task[None] | None = None

    @property
    def usable(self) -> bool:
        return self._up

    def succeeded(self) -> None:
        if self._up and not self._confirmed:
            CACHE_UP.labels("cache_lru").set(1)
            self._confirmed = True

    def failed(self, exc: BaseException, missed: Invalidation | None = None) -> None:
        """Stops reads and fills until Redis answers again and ``missed`` (if any) has been re-sent."""
        if missed is not None:
            self._miss(missed)
        if not self._up:
            return
        self._up = False
        self._since = time.monotonic()
        CACHE_UP.labels("cache_lru").set(0)
        log.warning("metadata cache at %s unavailable (%s); serving from the blobstore until it answers again", self._where, _describe(exc))
        self._probe = asyncio.get_running_loop().create_task(self._recover(), name="cache-recovery")

    def skipped(self, missed: Invalidation) -> None:
        """An invalidation not even tried, Redis being down: re-sent on its return."""
        self._miss(missed)

    async def aclose(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            try:
                await self._probe
            except asyncio.CancelledError:
                pass

    def _miss(self, item: Invalidation) -> None:
        self._misses += 1
        self._missed[item] = self._misses
        if len(self._missed) > MAX_MISSED:
            self._missed.clear()
            self._drops_asked += 1

    async def _recover(self) -> None:
        delay, resent, dropped = FIRST_PROBE, 0, False
        while True:
            await asyncio.sleep(delay)
            batch, drops = dict(self._missed), self._drops_asked
            drop = drops > self._drops_done
            try:
                await self._repair(list(batch), drop)
            except Exception as exc:  # noqa: BLE001 - any failure means "still down"
                log.debug("metadata cache still unavailable: %s", _describe(exc))
                delay = min(delay * 2, LAST_PROBE)
                continue
            self._drops_done, dropped, resent = drops, dropped or drop, resent + len(batch)
            for item, seen in batch.items():
                if self._missed.get(item) == seen:
                    del self._missed[item]
            if not self._missed and self._drops_asked == self._drops_done:
                break
            delay = 0  # more was missed while repairing: repair that too before reading
        self._up = True
        self._confirmed = True
        self._probe = None
        CACHE_UP.labels("cache_lru").set(1)
        log.info(
            "metadata cache at %s available again after %.1f s; %d missed invalidations re-sent%s",
            self._where,
            time.monotonic() - self._since,
            resent,
            ", every key dropped" if dropped else "",
        )


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
