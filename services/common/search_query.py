"""The ``/v1/search`` query and answer, in Docker Hub's v1 format.

Shared by the gateway (which answers it) and the search service (which computes it), so both read
``q``/``n``/``page`` the same way and an empty answer looks like a real one.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.common.errors import PAGINATION_NUMBER_INVALID, RegistryError

DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 100
# Longer queries are cut: no repository name is longer, and descriptions match on any part.
MAX_QUERY_LENGTH = 255
# Deeper pages answer empty; the bound keeps offsets small integers in SQL.
MAX_PAGE = 100_000


@dataclass(frozen=True)
class SearchQuery:
    q: str
    n: int
    page: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.n

    def params(self) -> dict[str, str]:
        return {"q": self.q, "n": str(self.n), "page": str(self.page)}


def clean_text(text: str) -> str:
    """Drops control characters (NUL breaks PostgreSQL, newlines and tabs mean nothing here)."""
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cc").strip()


def _number(params: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    raw = (params.get(key) or "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not raw.isascii() or len(raw) > 9:
        raise RegistryError(PAGINATION_NUMBER_INVALID, {key: raw[:20]})
    return max(low, min(int(raw), high))


def parse(params: Mapping[str, str]) -> SearchQuery:
    """``q`` (any text), ``n`` (1..100, default 25) and ``page`` (from 1); numbers out of range are
    clamped, non-numbers are PAGINATION_NUMBER_INVALID."""
    q = clean_text(params.get("q") or "")[:MAX_QUERY_LENGTH]
    n = _number(params, "n", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    page = _number(params, "page", 1, 1, MAX_PAGE)
    return SearchQuery(q, n, page)


def answer(query: SearchQuery, total: int, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Docker Hub's v1 search answer."""
    return {
        "num_results": total,
        "num_pages": (total + query.n - 1) // query.n,
        "page": query.page,
        "page_size": query.n,
        "query": query.q,
        "results": results,
    }


def result(name: str, description: str) -> dict[str, Any]:
    """One hit; stars and the official/automated flags are Docker Hub's and always empty here."""
    return {"name": name, "description": description, "star_count": 0, "is_official": False, "is_automated": False}
