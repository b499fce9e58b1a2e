"""The gateway's side of the search service: ``/v1/search`` forwarded over one HTTP client.

A short timeout: search is a convenience, and a slow or missing index must answer quickly (503)
rather than hold the client. With ``search_backend: ""`` there is no service and every search
answers an empty result.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from services.common import search_query
from services.common.config import Settings
from services.common.errors import UNAVAILABLE, RegistryError
from services.common.request_id_http import send_request_id
from services.common.search_query import SearchQuery

log = logging.getLogger("berth.gateway.search")

TIMEOUT = httpx.Timeout(2.0, connect=1.0)


class SearchClient:
    def __init__(self, base_url: str | None) -> None:
        self.base_url = base_url
        self._client = (
            httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT, event_hooks={"request": [send_request_id]}) if base_url else None
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> SearchClient:
        return cls(settings.search.base_url if settings.search_service else None)

    async def search(self, query: SearchQuery) -> dict[str, Any]:
        """The search service's answer; UNAVAILABLE (503) when it cannot be had."""
        if self._client is None:
            return search_query.answer(query, 0, [])
        try:
            response = await self._client.get("/v1/search", params=query.params())
        except httpx.HTTPError as exc:
            log.warning("search service at %s unreachable: %s", self.base_url, type(exc).__name__)
            raise RegistryError(UNAVAILABLE, {"reason": "the search service is unavailable"}) from None
        if response.status_code != 200:
            log.warning("search service at %s answered %d", self.base_url, response.status_code)
            raise RegistryError(UNAVAILABLE, {"reason": f"the search service answered {response.status_code}"})
        try:
            body = response.json()
            results = list(body["results"])
            int(body["num_results"])
        except (ValueError, KeyError, TypeError):
            raise RegistryError(UNAVAILABLE, {"reason": "the search service answered nonsense"}) from None
        return dict(body, results=results)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
