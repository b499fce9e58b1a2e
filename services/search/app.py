"""The search service's HTTP API.

    POST /events      notification envelopes from the registry (Berth's gateway or registry:2);
                      beyond loopback only with ``Authorization: Bearer <blobstore.token>``
                      (``services.common.search_security``)
    GET  /v1/search   Docker Hub's v1 search over the index
    GET  /_ping       liveness; GET /_ready: the database (``health_checks.py``, services.common.health)

The index is Berth's SQL one, or a custom one (``search_backend`` a module path, ``backends``)
behind the same routes and answers.

Event envelopes are stored in one transaction before the answer, so an acknowledged event is
never lost; descriptions, which need the registry, are read afterwards by background tasks (a few
at a time) and land a moment later. A description read that fails leaves the old one: ``berth
search reindex`` repairs what was missed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from services.common import health, http_errors, http_instrumentation, search_query, search_security
from services.common.config import Settings
from services.common.errors import SIZE_INVALID, UNSUPPORTED, RegistryError
from services.common.search_query import SearchQuery
from services.search import backends, health_checks
from services.search.describe import Describer, FetchError, base_of
from services.search.events import DescribeJob, EventApplier
from services.search.index import Index

log = logging.getLogger("berth.search")

# Largest envelope accepted (the gateway sends at most 50 events in one).
MAX_ENVELOPE = 16 << 20
# Description reads running at once.
DESCRIBERS = 4
FETCH_TIMEOUT = httpx.Timeout(10.0, connect=3.0)


@dataclass
class SearchState:
    index: Index
    applier: EventApplier
    describer: Describer
    # The configured registry base URL; empty: the one in each event's target.url.
    registry: str
    limiter: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(DESCRIBERS))
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def schedule(self, job: DescribeJob) -> None:
        task = asyncio.create_task(self.describe(job))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def describe(self, job: DescribeJob) -> None:
        base = self.registry or base_of(job.url, job.repository)
        if not base:
            log.info("no registry URL to read %s@%s from", job.repository, job.digest)
            return
        async with self.limiter:
            try:
                text = await self.describer.describe(base, job.repository, job.digest)
            except FetchError as exc:
                log.warning("could not read the description of %s@%s: %s", job.repository, job.digest, exc)
                return
            except Exception:  # a background task has no one else to tell
                log.exception("could not read the description of %s@%s", job.repository, job.digest)
                return

        def store() -> None:
            with self.index.writing() as conn:
                self.index.set_description(conn, job.repository, text or "", job.at)

        try:
            await run_in_threadpool(store)
        except Exception:  # a background task has no one else to tell
            log.exception("could not store the description of %s", job.repository)


Apply = Callable[[Any], tuple[int, list[DescribeJob]]]
Search = Callable[[SearchQuery], tuple[int, list[dict[str, Any]]]]


def create_app(settings: Settings, index: Index | None = None, transport: httpx.AsyncBaseTransport | None = None) -> FastAPI:
    """The app over ``index`` (default: opened, and migrated, from ``search.database`` now, so a
    database the service cannot use stops it before it listens), or over the custom index that
    ``search_backend`` names. That index is made now too, for the same reason: ConfigError if it
    cannot be. Likewise a service that must ask POST /events for a token it does not have
    (ConfigError naming blobstore.token)."""
    search_security.required_token(settings)
    if backends.is_custom(settings.search_backend):
        custom = backends.CustomBackend(backends.load(settings.search_backend), settings.search_backend)
        return _app(settings, custom.apply, custom.search, [], None)
    index = index if index is not None else Index.open(settings.search.database)
    applier = EventApplier(index)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = httpx.AsyncClient(timeout=FETCH_TIMEOUT, follow_redirects=True, transport=transport)
        state = SearchState(index, applier, Describer(client), settings.search.registry.rstrip("/"))
        app.state.search = state
        try:
            yield
        finally:
            for task in list(state.tasks):
                task.cancel()
            await asyncio.gather(*state.tasks, return_exceptions=True)
            await client.aclose()
            index.close()

    def search(query: SearchQuery) -> tuple[int, list[dict[str, Any]]]:
        total, rows = index.search(query)
        return total, [search_query.result(name, description) for name, description in rows]

    return _app(settings, applier.apply, search, health_checks.checks(index), lifespan)


def _app(
    settings: Settings,
    apply: Apply,
    search: Search,
    checks: list[health.Check],
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None,
) -> FastAPI:
    """The routes, the same over either index: ``apply`` takes an envelope, ``search`` answers a
    query with (number of matches, this page's v1 results)."""
    app = FastAPI(title="Berth search", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    guard = search_security.EventsGuard(search_security.required_token(settings))
    if guard.enabled:
        log.info(
            "POST /events asks for blobstore.token (search.security %s, listening on %s)", settings.search.security, settings.search.addr
        )

    http_errors.install(app, "search")
    health.install(app, "search", debug=settings.debug, checks=checks)

    @app.post("/events")
    async def events(request: Request) -> Response:
        guard.check(request)  # before a byte of the body is read
        body = bytearray()
        async for piece in request.stream():
            body += piece
            if len(body) > MAX_ENVELOPE:
                raise RegistryError(SIZE_INVALID, {"reason": f"envelope larger than {MAX_ENVELOPE} bytes"}, status=413)
        try:
            envelope = json.loads(body)
            applied, jobs = await run_in_threadpool(apply, envelope)
        except (ValueError, RecursionError) as exc:  # JSON errors are ValueErrors; absurd nesting is a RecursionError
            raise RegistryError(UNSUPPORTED, {"reason": f"not an event envelope: {str(exc)[:200]}"}, status=400) from None
        for job in jobs:  # only the SQL index has descriptions to read (and the state to read them)
            request.app.state.search.schedule(job)
        return JSONResponse({"applied": applied})

    @app.get("/v1/search")
    async def v1_search(request: Request) -> Response:
        query = search_query.parse(request.query_params)
        total, results = await run_in_threadpool(search, query)
        return JSONResponse(search_query.answer(query, total, results))

    http_instrumentation.install(app, "search", settings)
    return app
