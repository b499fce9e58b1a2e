"""Redis clients for the Berth services that use one (the gateways' metadata cache, the token
service's shared counters), set up alike: Redis is an optimisation there, never a dependency, so
every call is short and tried once, and a slow Redis cannot open a connection per request."""

from __future__ import annotations

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from services.common.config import RedisSettings

# Connections per process at most; callers past it wait (bounded by the timeout) for one.
MAX_CONNECTIONS = 64


def _options(settings: RedisSettings) -> dict[str, object]:
    return {
        "host": settings.host,
        "port": settings.port,
        "password": settings.password or None,
        "db": settings.db,
        "socket_timeout": settings.timeout,
        "socket_connect_timeout": settings.timeout,
        "max_connections": MAX_CONNECTIONS,
    }


def sync_client(settings: RedisSettings) -> redis.Redis:
    # One try per call: retrying a down Redis would multiply what each caller waits.
    return redis.Redis(**_options(settings), retry=Retry(NoBackoff(), 0))  # type: ignore[arg-type]


def async_client(settings: RedisSettings) -> aioredis.Redis:
    return aioredis.Redis(**_options(settings), retry=AsyncRetry(NoBackoff(), 0))  # type: ignore[arg-type]
