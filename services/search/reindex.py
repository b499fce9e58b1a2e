"""``berth search reindex``: the index rebuilt from what a registry holds.

For when events were missed (the search service was down longer than the gateway kept them, or
the index was lost): walks ``/v2/_catalog`` page by page, each repository's tags (HEAD per tag for
its digest, which is no pull), and reads one image's description ("latest" if there is one).
Tags the registry no longer has, and repositories it no longer lists, leave the index; pull counts
stay. Writes go straight to the database, so the search service may be running or not.

Exit codes (``berth search reindex --help``): 0 everything indexed; 1 a runtime failure: some
repositories failed (named on stderr, the rest indexed), or the registry or the database could not
be read; 2 a usage or configuration error (an unusable ``search.database``).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TextIO
from urllib.parse import urljoin

import httpx

from services.search.describe import ACCEPT, USER_AGENT, Describer, FetchError, manifest_url
from services.search.index import Index

PAGE = 1000
CONCURRENCY = 8
# Seconds between two progress lines.
PROGRESS_EVERY = 1.0


class RegistryUnavailable(Exception):
    """The registry cannot be walked (or one listing of it cannot be read)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Outcome:
    indexed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    hidden: int = 0

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


async def _pages(client: httpx.AsyncClient, url: str, key: str) -> AsyncIterator[list[str]]:
    """The names of a paginated listing, following ``Link: <...>; rel="next"``."""
    next_url: str | None = url
    while next_url:
        response = await client.get(next_url)
        if response.status_code != 200:
            raise RegistryUnavailable(f"GET {next_url} answered {response.status_code}", response.status_code)
        names = response.json().get(key) or []
        yield [n for n in names if isinstance(n, str)]
        link = response.links.get("next", {}).get("url")
        next_url = urljoin(next_url, link) if link else None


async def catalog(client: httpx.AsyncClient, base: str) -> list[str]:
    names: list[str] = []
    async for page in _pages(client, f"{base}/v2/_catalog?n={PAGE}", "repositories"):
        names += page
    return names


async def _repository(client: httpx.AsyncClient, describer: Describer, base: str, name: str) -> tuple[dict[str, str], str | None]:
    """(tag -> digest, description) of one repository."""
    tags: list[str] = []
    try:
        async for page in _pages(client, f"{base}/v2/{name}/tags/list?n={PAGE}", "tags"):
            tags += page
    except RegistryUnavailable as exc:
        if exc.status == 404:  # deleted since the catalog was read
            return {}, None
        raise
    found: dict[str, str] = {}
    for tag in tags:
        response = await client.head(manifest_url(base, name, tag), headers={"Accept": ACCEPT})
        digest = response.headers.get("docker-content-digest")
        if response.status_code == 200 and digest:
            found[tag] = digest
    if not found:
        return found, None
    chosen = "latest" if "latest" in found else next(iter(found))
    return found, await describer.describe(base, name, found[chosen])


async def reindex(index: Index, base: str, out: TextIO = sys.stderr, transport: httpx.AsyncBaseTransport | None = None) -> Outcome:
    """Brings the index in line with the registry at ``base``; RegistryUnavailable if it cannot."""
    base = base.rstrip("/")
    outcome = Outcome()
    headers = {"User-Agent": USER_AGENT}
    async with httpx.AsyncClient(timeout=30, headers=headers, transport=transport, follow_redirects=True) as client:
        try:
            names = await catalog(client, base)
        except (httpx.HTTPError, ValueError) as exc:
            raise RegistryUnavailable(f"cannot read {base}/v2/_catalog: {type(exc).__name__}") from None
        print(f"reindex: {len(names)} repositories at {base}", file=out, flush=True)
        describer = Describer(client)
        limiter = asyncio.Semaphore(CONCURRENCY)
        last_report = time.monotonic()

        async def one(name: str) -> None:
            nonlocal last_report
            async with limiter:
                try:
                    tags, description = await _repository(client, describer, base, name)
                except (httpx.HTTPError, RegistryUnavailable, FetchError, ValueError) as exc:
                    outcome.failed.append((name, str(exc) or type(exc).__name__))
                    return
            await asyncio.to_thread(_store, index, name, tags, description)
            outcome.indexed += 1
            if time.monotonic() - last_report >= PROGRESS_EVERY:
                last_report = time.monotonic()
                print(f"reindex: {outcome.indexed + len(outcome.failed)}/{len(names)} repositories", file=out, flush=True)

        await asyncio.gather(*(one(name) for name in names))
    with index.writing() as conn:
        outcome.hidden = index.forget_others(conn, names)
    print(
        f"reindex: {outcome.indexed} repositories indexed, {len(outcome.failed)} failed, {outcome.hidden} no longer in the registry",
        file=out,
        flush=True,
    )
    for name, reason in outcome.failed:
        print(f"reindex: failed: {name}: {reason}", file=out)
    return outcome


def _store(index: Index, name: str, tags: dict[str, str], description: str | None) -> None:
    with index.writing() as conn:
        index.replace_tags(conn, name, tags)
        if tags:
            index.set_description(conn, name, description or "", None)
