"""Small writers and readers the search tests share."""

from __future__ import annotations

import hashlib

from services.common.search_query import SearchQuery
from services.search.index import Index


def digest(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def push(index: Index, name: str, description: str = "", tag: str = "latest", at: float | None = 1000.0, image: str = "") -> str:
    """A tagged push with its description, as the events endpoint would store it; returns the digest."""
    pushed = digest(image or f"{name}:{tag}")
    with index.writing() as conn:
        index.tag_pushed(conn, name, tag, pushed, at)
        if description:
            index.set_description(conn, name, description, at)
    return pushed


def names(index: Index, q: str, n: int = 100, page: int = 1) -> list[str]:
    return [name for name, _ in index.search(SearchQuery(q, n, page))[1]]


def total(index: Index, q: str) -> int:
    return index.search(SearchQuery(q, 25, 1))[0]
