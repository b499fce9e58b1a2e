"""One upstream registry as the mirror sees it: manifests by HEAD and GET, blobs streamed, with the
upstream's own authentication.

Auth follows what Docker Hub and registry:2 do: a request goes out with whatever is known to work
(a cached Bearer token for its scope, or Basic credentials once the upstream asked for Basic); a
``401`` with ``WWW-Authenticate: Bearer realm=…,service=…,scope=…`` leads to one token request at
the realm (Basic credentials when configured, anonymous otherwise), and the request is sent again
with the token. Tokens are cached by (realm, service, scope) until shortly before they expire
(``expires_in``, 60 s when not said). A ``401`` with a Basic challenge is answered with the
configured credentials.

Failures are two exceptions: ``NotFound`` (the upstream says it has no such thing) and
``UpstreamError`` (it could not be reached in time, was rate limited, failed, or refused our
credentials), which the mirror answers by serving stale content or a 503.
"""

from __future__ import annotations

import base64
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from cachetools import TLRUCache

from services.common.config.schema import UpstreamSettings

log = logging.getLogger("berth.gateway.proxy")

MANIFEST_ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.artifact.manifest.v1+json",
    )
)
# Seconds before a token's stated expiry at which it is no longer used.
TOKEN_MARGIN = 10.0
# Upstream tokens kept per upstream; past this the least recently used goes (expired ones first).
TOKENS_KEPT = 4096
_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def _token_expiry(key: tuple[str, str, str], entry: tuple[str, float], now: float) -> float:
    """A cached token's own expiry (its ``expires_in`` less the margin, fixed when it came)."""
    return entry[1]


class NotFound(Exception):
    """The upstream answered 404."""


class UpstreamError(Exception):
    """The upstream could not answer: ``reason`` is one of unreachable, timeout, throttled,
    status, denied, invalid (what the metrics count)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """(scheme, parameters) of a WWW-Authenticate header."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3)) for m in _CHALLENGE_PARAM.finditer(rest)}
    return scheme.lower(), params


def _basic_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


class Upstream:
    def __init__(self, settings: UpstreamSettings, timeout: float, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.prefix = settings.prefix
        # What metrics call it.
        self.label = settings.prefix.rstrip("/") or "default"
        self.url = settings.remoteurl
        self.ttl = float(settings.ttl)
        self.tag_ttl = float(settings.tag_ttl)
        self.timeout = timeout
        self._credentials = (settings.username, settings.password) if settings.username else None
        self.client = httpx.AsyncClient(
            base_url=self.url,
            timeout=httpx.Timeout(timeout),
            follow_redirects=True,  # blobs are often served from a CDN or presigned URL
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            headers={"User-Agent": "berth-mirror", "Accept-Encoding": "identity"},
            transport=transport,
        )
        # (realm, service, scope) -> (token, when to stop using it, by time.time()). Only the event
        # loop's thread touches it: no lock.
        self._tokens: TLRUCache[tuple[str, str, str], tuple[str, float]] = TLRUCache(
            maxsize=TOKENS_KEPT, ttu=_token_expiry, timer=lambda: time.time()
        )
        self._basic = False  # the upstream asked for Basic: send it up front

    def covers(self, name: str) -> bool:
        return name.startswith(self.prefix) and len(name) > len(self.prefix)

    def remote_name(self, name: str) -> str:
        return name[len(self.prefix) :]

    async def aclose(self) -> None:
        await self.client.aclose()

    # Requests

    def _auth_headers(self, scope: str) -> dict[str, str]:
        for key in list(self._tokens):
            # get() and not the items: a token that expires meanwhile is None, not a KeyError.
            cached = self._tokens.get(key) if key[2] == scope else None
            if cached is not None:
                return {"Authorization": f"Bearer {cached[0]}"}
        if self._basic and self._credentials:
            return {"Authorization": _basic_header(*self._credentials)}
        return {}

    async def _token(self, params: dict[str, str], scope: str) -> str:
        """A token for ``scope`` (the one a request needs) from the challenge's realm, asking for
        the challenge's own scope when it names one."""
        realm = params.get("realm", "")
        service = params.get("service", "")
        key = (realm, service, scope)
        scope = params.get("scope") or scope
        cached = self._tokens.get(key)
        if cached is not None:
            return cached[0]
        if not realm.startswith(("http://", "https://")):
            raise UpstreamError("denied", f"{self.url} asked for a token with an unusable realm {realm!r}")
        query = {"service": service} if service else {}
        if scope:
            query["scope"] = scope
        auth = httpx.BasicAuth(*self._credentials) if self._credentials else None
        try:
            r = await self.client.get(realm, params=query, auth=auth)
        except httpx.TimeoutException:
            raise UpstreamError("timeout", f"token request to {realm} timed out") from None
        except httpx.TransportError as exc:
            raise UpstreamError("unreachable", f"token request to {realm} failed: {exc.__class__.__name__}") from None
        if r.status_code != 200:
            raise UpstreamError("denied", f"{realm} refused a token for {scope or 'the registry'}: {r.status_code}")
        try:
            body = r.json()
            token = body.get("token") or body.get("access_token")
            lifetime = float(body.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError):
            token = None
        if not token:
            raise UpstreamError("denied", f"{realm} answered no token")
        self._tokens[key] = (token, time.time() + max(lifetime - TOKEN_MARGIN, 1.0))
        return token

    async def _send(self, method: str, path: str, scope: str, headers: dict[str, str], *, stream: bool = False) -> httpx.Response:
        """Sends with known credentials; on a 401 authenticates as challenged and sends once more."""
        for attempt in (0, 1):
            request = self.client.build_request(method, path, headers={**headers, **self._auth_headers(scope)})
            try:
                response = await self.client.send(request, stream=stream)
            except httpx.TimeoutException:
                raise UpstreamError("timeout", f"{self.url} did not answer within {self.timeout:g}s") from None
            except httpx.TransportError as exc:
                raise UpstreamError("unreachable", f"{self.url} is unreachable ({exc.__class__.__name__})") from None
            if response.status_code != 401 or attempt:
                return response
            challenge = response.headers.get("www-authenticate", "")
            await response.aclose()
            scheme, params = parse_challenge(challenge)
            if scheme == "bearer":
                await self._token(params, scope)
            elif scheme == "basic" and self._credentials and not self._basic:
                self._basic = True
            else:
                return response
        raise AssertionError("unreachable")

    def _check(self, response: httpx.Response, what: str) -> None:
        code = response.status_code
        if code < 300:
            return
        if code == 404:
            raise NotFound(what)
        if code == 429:
            raise UpstreamError("throttled", f"{self.url} is rate limiting (429) {what}")
        if code in (401, 403):
            raise UpstreamError("denied", f"{self.url} refused our credentials ({code}) for {what}")
        raise UpstreamError("status", f"{self.url} answered {code} for {what}")

    # The registry API

    async def head_manifest(self, name: str, reference: str) -> str:
        """The digest the upstream has for a tag (empty when it does not say)."""
        remote = self.remote_name(name)
        r = await self._send("HEAD", f"/v2/{remote}/manifests/{reference}", f"repository:{remote}:pull", {"Accept": MANIFEST_ACCEPT})
        self._check(r, f"{remote}:{reference}")
        return r.headers.get("docker-content-digest", "")

    async def get_manifest(self, name: str, reference: str, limit: int) -> tuple[bytes, str]:
        """Payload and Content-Type; at most ``limit`` bytes."""
        remote = self.remote_name(name)
        r = await self._send(
            "GET", f"/v2/{remote}/manifests/{reference}", f"repository:{remote}:pull", {"Accept": MANIFEST_ACCEPT}, stream=True
        )
        try:
            self._check(r, f"{remote}:{reference}")
            body = bytearray()
            async for piece in r.aiter_bytes():
                body += piece
                if len(body) > limit:
                    raise UpstreamError("invalid", f"{self.url} sent a manifest larger than {limit} bytes")
        except httpx.TimeoutException:
            raise UpstreamError("timeout", f"{self.url} stopped sending {remote}:{reference}") from None
        except httpx.TransportError as exc:
            raise UpstreamError("unreachable", f"{self.url} broke off {remote}:{reference} ({exc.__class__.__name__})") from None
        finally:
            await r.aclose()
        return bytes(body), r.headers.get("content-type", "")

    async def head_blob(self, name: str, digest: str) -> int:
        remote = self.remote_name(name)
        r = await self._send("HEAD", f"/v2/{remote}/blobs/{digest}", f"repository:{remote}:pull", {})
        self._check(r, f"{remote}@{digest}")
        return int(r.headers.get("content-length", "-1"))

    @asynccontextmanager
    async def open_blob(self, name: str, digest: str) -> AsyncIterator[httpx.Response]:
        """The open response of a blob GET (checked: 2xx), closed on exit."""
        remote = self.remote_name(name)
        r = await self._send("GET", f"/v2/{remote}/blobs/{digest}", f"repository:{remote}:pull", {}, stream=True)
        try:
            self._check(r, f"{remote}@{digest}")
            yield r
        finally:
            await r.aclose()
