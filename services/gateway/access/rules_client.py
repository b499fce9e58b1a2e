"""Asks the token service what its rules grant a caller, for decisions a token cannot answer on its
own: a token names the repositories it was issued for, while search results name many others.

And exchanges Basic credentials for a token, for the one route that takes them in token mode
(/v1/search: the docker daemon sends its stored credentials there, never a token). The token
service checks them as it checks any login (its accounts, its failed-login limits, counted against
the client's address, which the gateway passes on as a proxy does); the gateway never sees a user
table.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import httpx

from services.common.errors import TOOMANYREQUESTS, UNAVAILABLE, RegistryError
from services.common.request_id_http import send_request_id

log = logging.getLogger("berth.gateway.access")

# The token service takes at most this many scopes per request.
_BATCH = 64


class RulesClient:
    def __init__(self, url: str, token_url: str = "", service: str = "") -> None:
        self.url = url
        self.token_url = token_url
        self.service = service
        self._client = httpx.AsyncClient(timeout=5.0, event_hooks={"request": [send_request_id]})

    async def login(self, authorization: str, client_address: str) -> str | None:
        """A token (no scopes) for the Basic credentials in ``authorization``; None when the token
        service refuses them (401). TOOMANYREQUESTS (429, with its Retry-After) while it blocks the
        account or the address; UNAVAILABLE when it cannot be asked."""
        headers = {"Authorization": authorization}
        if client_address:
            # The token service believes these from the gateway only when http.trusted_proxies
            # lists it (as on one host); else failures count against the gateway's own address.
            host = f"[{client_address}]" if ":" in client_address else client_address
            headers.update({"X-Forwarded-For": client_address, "Forwarded": f'for="{host}"'})
        try:
            r = await self._client.get(self.token_url, params={"service": self.service}, headers=headers)
        except httpx.HTTPError as exc:
            raise RegistryError(UNAVAILABLE, {"service": "auth", "reason": type(exc).__name__}) from None
        if r.status_code == 401:
            return None
        if r.status_code == 429:
            retry = r.headers.get("retry-after", "")
            raise RegistryError(
                TOOMANYREQUESTS,
                {"reason": "too many failed logins; retry later"},
                headers={"Retry-After": retry} if retry.isdigit() else None,
            )
        token = None
        if r.status_code == 200:
            try:
                body = r.json()
                token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
            except ValueError:
                token = None
        if not isinstance(token, str) or not token:
            log.warning("token service answered %s to a token request for /v1/search", r.status_code)
            raise RegistryError(UNAVAILABLE, {"service": "auth", "status": r.status_code})
        return token

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
