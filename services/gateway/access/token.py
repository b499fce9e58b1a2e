"""Docker token auth: Bearer JWTs from the token service, checked against trusted public keys
(rootcertbundle's, privileged_key's, the JWKS's).

A token is accepted when its signature verifies with a trusted key (``kid`` names it; a token
without ``kid`` must verify with exactly one key of the PEM files), ``iss`` is the configured
issuer, ``aud`` names this service, and ``exp``/``nbf`` hold within ``leeway``. Verified tokens are
cached by their raw text until they expire, so the signature is checked once per token, not once
per request.

Refusals follow registry:2: no Bearer token is 401 UNAUTHORIZED with a challenge naming the scope
the request needs; a bad token adds ``error="invalid_token"``; a good token that lacks an action is
also 401 (so clients fetch a new token) with ``error="insufficient_scope"``, under the code DENIED.

Where the route takes Basic credentials too (``basic``: /v1/search, for ``docker search``), they
are exchanged for a token at the token service (``RulesClient.login``), and the caller is whoever
that token names; credentials it refuses are 401 with the same Bearer challenge.
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from starlette.requests import Request

from services.common.config import TokenAuthSettings
from services.common import forwarded
from services.common.errors import DENIED, UNAUTHORIZED, UNAVAILABLE, ErrorCode, RegistryError
from services.common.metrics import ACCESS_DENIED
from services.gateway.access.keys import ALGORITHMS, JWKSKeys, KeysUnavailable, TrustedKey, load_bundle
from services.gateway.access.model import Access, Challenge, Grant, Identity, Reach, parse_basic, quote, scope_param
from services.gateway.access.rules_client import RulesClient

log = logging.getLogger("berth.gateway.access")

MAX_TOKEN_LENGTH = 16 * 1024
CACHE_SIZE = 10_000
_NO_CREDENTIALS = ACCESS_DENIED.labels("no_credentials")
_INVALID_TOKEN = ACCESS_DENIED.labels("invalid_token")
_INSUFFICIENT_SCOPE = ACCESS_DENIED.labels("insufficient_scope")
_BAD_CREDENTIALS = ACCESS_DENIED.labels("bad_credentials")
_JWS = jwt.api_jws.PyJWS(algorithms=list(ALGORITHMS))


class InvalidToken(Exception):
    """A token that is malformed, badly signed, or not valid here and now (the message says why)."""


@dataclass(frozen=True)
class Claims:
    subject: str | None
    grants: tuple[Grant, ...]
    valid_until: float  # exp + leeway


class TokenVerifier:
    def __init__(
        self,
        settings: TokenAuthSettings,
        bundle: dict[str, TrustedKey],
        jwks: JWKSKeys | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.bundle = bundle
        self.jwks = jwks
        self.clock = clock
        self._cache: OrderedDict[str, Claims] = OrderedDict()

    async def verify(self, raw: str) -> Claims:
        """The token's claims; InvalidToken if it is not acceptable, KeysUnavailable if unknowable."""
        cached = self._cache.get(raw)
        if cached is not None:
            if self.clock() <= cached.valid_until:
                return cached
            del self._cache[raw]
        claims = self._claims(await self._verified_payload(raw))
        self._remember(raw, claims)
        return claims

    def _remember(self, raw: str, claims: Claims) -> None:
        if len(self._cache) >= CACHE_SIZE:
            now = self.clock()
            for stale in [t for t, c in self._cache.items() if c.valid_until < now]:
                del self._cache[stale]
            while len(self._cache) >= CACHE_SIZE:
                self._cache.popitem(last=False)
        self._cache[raw] = claims

    async def _verified_payload(self, raw: str) -> bytes:
        if len(raw) > MAX_TOKEN_LENGTH or raw.count(".") != 2:
            raise InvalidToken("malformed token")
        try:
            header = _JWS.get_unverified_header(raw)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"malformed token: {exc}") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS:
            raise InvalidToken(f"algorithm {alg!r} is not accepted")
        if "crit" in header or "b64" in header:
            raise InvalidToken("critical header extensions are not supported")
        if kid is None:
            payloads = [p for key in self.bundle.values() if (p := self._signed(raw, alg, key)) is not None]
            if len(payloads) != 1:
                raise InvalidToken(f"no kid, and {len(payloads)} trusted bundle keys verify the token")
            return payloads[0]
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("malformed kid")
        key = self.bundle.get(kid)
        if key is None and self.jwks is not None:
            key = await self.jwks.get(kid)
        if key is None:
            raise InvalidToken(f"signed by an unknown key {kid[:100]!r}")
        payload = self._signed(raw, alg, key)
        if payload is None:
            raise InvalidToken(f"bad signature (key {kid!r}, {alg})")
        return payload

    @staticmethod
    def _signed(raw: str, alg: str, key: TrustedKey) -> bytes | None:
        """The payload if ``key`` verifies the signature, else None."""
        if not key.fits(alg):
            return None
        try:
            return _JWS.decode_complete(raw, key.key, algorithms=[alg])["payload"]  # type: ignore[no-any-return]
        except (jwt.PyJWTError, ValueError, TypeError):
            return None

    def _claims(self, payload: bytes) -> Claims:
        try:
            data = json.loads(payload)
        except ValueError:
            raise InvalidToken("payload is not JSON") from None
        if not isinstance(data, dict):
            raise InvalidToken("payload is not a JSON object")
        now, leeway = self.clock(), self.settings.leeway
        exp, nbf, iat = data.get("exp"), data.get("nbf"), data.get("iat")
        if not _is_time(exp):
            raise InvalidToken("exp is missing or not a number")
        if now > exp + leeway:
            raise InvalidToken("expired")
        if nbf is not None and (not _is_time(nbf) or now + leeway < nbf):
            raise InvalidToken("not valid yet (nbf)")
        if iat is not None and not _is_time(iat):
            raise InvalidToken("iat is not a number")
        if data.get("iss") != self.settings.issuer:
            raise InvalidToken(f"issuer {str(data.get('iss'))[:100]!r} is not {self.settings.issuer!r}")
        aud = data.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if self.settings.service not in audiences:
            raise InvalidToken(f"audience does not include {self.settings.service!r}")
        subject = data.get("sub")
        if subject is not None and not isinstance(subject, str):
            raise InvalidToken("sub is not a string")
        return Claims(subject or None, _grants(data.get("access", [])), exp + leeway)


def _is_time(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _grants(access: Any) -> tuple[Grant, ...]:
    if access is None:
        return ()
    if not isinstance(access, list):
        raise InvalidToken("access is not a list")
    grants = []
    for entry in access:
        if not isinstance(entry, dict):
            raise InvalidToken("access entry is not an object")
        type_, name, actions = entry.get("type"), entry.get("name"), entry.get("actions") or []
        if not isinstance(type_, str) or not isinstance(name, str) or not isinstance(actions, list):
            raise InvalidToken("access entry lacks type, name or actions")
        if not all(isinstance(a, str) for a in actions):
            raise InvalidToken("access actions are not strings")
        grants.append(Grant(type_, name, frozenset(actions)))
    return tuple(grants)


def trusted_files(settings: TokenAuthSettings) -> dict[str, TrustedKey]:
    """The keys of rootcertbundle and privileged_key, one set: the privileged key (the classic
    registry's) signs tokens like any bundle key, so whoever holds it grants themselves access."""
    keys: dict[str, TrustedKey] = {}
    if settings.rootcertbundle:
        keys |= load_bundle(settings.rootcertbundle, "auth.token.rootcertbundle")
    if settings.privileged_key:
        keys |= load_bundle(settings.privileged_key, "auth.token.privileged_key")
    return keys


class TokenAccessController:
    """registry:2's token access controller: a grant, or a Bearer challenge for what is missing."""

    def __init__(self, settings: TokenAuthSettings, verifier: TokenVerifier | None = None) -> None:
        self.settings = settings
        if verifier is None:
            bundle = trusted_files(settings)
            jwks = JWKSKeys(settings.jwks, settings.jwks_ttl, settings.jwks_refresh_interval) if settings.jwks else None
            if not bundle and jwks is None:
                raise ValueError("auth.token: set jwks, rootcertbundle and/or privileged_key, or no token can be verified")
            verifier = TokenVerifier(settings, bundle, jwks)
        self.verifier = verifier
        self.rules = RulesClient(settings.authorize_url, settings.token_url, settings.service)

    async def authorized(self, request: Request, needed: Sequence[Access], *, basic: bool = False) -> Identity:
        header = request.headers.get("authorization", "")
        scheme, _, raw = header.strip().partition(" ")
        raw = raw.strip()
        if basic and scheme.lower() == "basic":
            identity = await self._from_basic(request, header, needed)
        elif scheme.lower() != "bearer" or not raw:
            _NO_CREDENTIALS.inc()
            raise self._challenge(UNAUTHORIZED, needed)
        else:
            identity = await self._from_token(request, raw, needed)
        if not all(identity.allows(access) for access in needed):
            _INSUFFICIENT_SCOPE.inc()
            raise self._challenge(DENIED, needed, "insufficient_scope")
        return identity

    async def _from_token(self, request: Request, raw: str, needed: Sequence[Access]) -> Identity:
        try:
            claims = await self.verifier.verify(raw)
        except InvalidToken as exc:
            log.info("%s %s: token refused: %s", request.method, request.url.path, exc)
            _INVALID_TOKEN.inc()
            raise self._challenge(UNAUTHORIZED, needed, "invalid_token") from None
        except KeysUnavailable as exc:
            raise RegistryError(UNAVAILABLE, {"reason": str(exc)}) from None
        return Identity(account=claims.subject, token=raw, grants=claims.grants)

    async def _from_basic(self, request: Request, header: str, needed: Sequence[Access]) -> Identity:
        """The identity of a token the token service issues for the Basic credentials (it checks
        them, with its own accounts and failed-login limits); the challenge when it refuses them."""
        credentials = parse_basic(header)
        token = await self.rules.login(header.strip(), forwarded.client_address(request)) if credentials else None
        if token is None:
            user = credentials[0][:100] if credentials else ""
            log.info("%s %s: Basic credentials refused by the token service%s", request.method, request.url.path,
                     f" for {user!r}" if user else " (malformed)")
            _BAD_CREDENTIALS.inc()
            raise self._challenge(UNAUTHORIZED, needed)
        try:
            claims = await self.verifier.verify(token)
        except InvalidToken as exc:
            # The token service's own token does not verify here: its issuer, audience or keys
            # differ from auth.token's. Not the caller's fault.
            log.warning("a token from %s does not verify: %s (check auth.token against token_service)", self.rules.token_url, exc)
            raise RegistryError(UNAVAILABLE, {"service": "auth", "reason": "its tokens do not verify here"}) from None
        except KeysUnavailable as exc:
            raise RegistryError(UNAVAILABLE, {"reason": str(exc)}) from None
        return Identity(account=claims.subject, token=token, grants=claims.grants)

    def _challenge(self, code: ErrorCode, needed: Sequence[Access], error: str = "") -> Challenge:
        value = f"Bearer realm={quote(self.settings.realm)},service={quote(self.settings.service)}"
        scope = scope_param(needed)
        if scope:
            value += f",scope={quote(scope)}"
        if error:
            value += f",error={quote(error)}"
        return Challenge(code, value, needed)

    def reach(self, identity: Identity) -> Reach:
        return "some"

    async def pullable(self, identity: Identity, names: Sequence[str]) -> set[str]:
        """The token may name only some repositories; the rules at the token service know the rest."""
        if not names:
            return set()
        return await self.rules.pullable(identity.token, names)

    async def aclose(self) -> None:
        if self.verifier.jwks is not None:
            await self.verifier.jwks.aclose()
        await self.rules.aclose()
