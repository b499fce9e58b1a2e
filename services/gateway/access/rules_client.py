"""Asks the token service what its rules grant a caller, for decisions a token cannot answer on its
own: a token names the repositories it was issued for, while search results name many others."""
from __future__ import annotations

import logging
from collections.abc import Sequence

import httpx

from services.common.errors import UNAVAILABLE, RegistryError
from services.common.request_id_http import send_request_id

log = logging.getLogger("berth.gateway.access")

# The token service takes at most this many scopes per request.
_BATCH = 64


class RulesClient:
    def __init__(self, url: str) -> None:
        self.url = url
        self._client = httpx.AsyncClient(timeout=5.0, event_hooks={"request": [send_request_id]})

    async def pullable(self, token: str | None, names: Sequence[str]) -> set[str]:
        """Those of ``names`` the token's account (anonymous without a token) may pull."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        allowed: set[str] = set()
        unique = list(dict.fromkeys(names))
        for start in range(0, len(unique), _BATCH):
            scopes = [f"repository:{name}:pull" for name in unique[start : start + _BATCH]]
            try:
                r = await self._client.post(self.url, json={"scopes": scopes}, headers=headers)
            except httpx.HTTPError as exc:
                raise RegistryError(UNAVAILABLE, {"service": "auth", "reason": type(exc).__name__}) from None
            if r.status_code != 200:
                log.warning("token service answered %s to /authorize", r.status_code)
                raise RegistryError(UNAVAILABLE, {"service": "auth", "status": r.status_code})
            for grant in r.json().get("access", []):
                if grant.get("type") == "repository" and "pull" in grant.get("actions", []):
                    allowed.add(grant.get("name"))
        return allowed

    async def aclose(self) -> None:
        await self._client.aclose()
