"""Docker token auth: Bearer JWTs from the token service, checked against trusted public keys
(rootcertbundle's, privileged_key's, the JWKS's).

A token is accepted when its signature verifies with a trusted key (``kid`` names it; a token
without ``kid`` must verify with exactly one key of the PEM files) and pyjwt's ``decode`` accepts
its registered claims: ``exp``, ``iss`` and ``aud`` present, ``iss`` the configured issuer, ``aud``
naming this service, ``exp``/``nbf``/``iat`` within ``leeway``. The access list is ours to check. Verified tokens are
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

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cachetools import TLRUCache
from starlette.requests import Request

from services.common import basic_auth, forwarded
from services.common.config import TokenAuthSettings
from services.common.errors import (
    DENIED,
    UNAUTHORIZED,
    UNAVAILABLE,
    ErrorCode,
    RegistryError,
)
from services.common.metrics import ACCESS_DENIED
from services.gateway.access.keys import (
    ALGORITHMS,
    JWKSKeys,
    KeysUnavailable,
    TrustedKey,
    load_bundle,
)
from services.gateway.access.model import (
    Access,
    Challenge,
    Grant,
    Identity,
    Reach,
    quote,
    scope_param,
)
from services.gateway.access.rules_client import RulesClient

log = logging.getLogger("berth.gateway.access")

MAX_TOKEN_LENGTH = 16 * 1024
CACHE_SIZE = 10_000
_NO_CREDENTIALS = ACCESS_DENIED.labels("no_credentials")
_INVALID_TOKEN = ACCESS_DENIED.labels("invalid_token")
_INSUFFICIENT_SCOPE = ACCESS_DENIED.labels("insufficient_scope")
_BAD_CREDENTIALS = ACCESS_DENIED.labels("bad_credentials")
# Registered claims every token must carry (registry:2's too); nbf, iat, sub and jti are checked when present.
REQUIRED_CLAIMS = ("exp", "iss", "aud")
_JWT = jwt.PyJWT()


class InvalidToken(Exception):
    """A token that is malformed, badly signed, or not valid here and now (the message says why)."""


@dataclass(frozen=True)
class Claims:
    subject: str | None
    grants: tuple[Grant, ...]
    valid_until: float  # exp + leeway


def _usable_until(raw: str, claims: Claims, now: float) -> float:
    """When the cache stops vouching for a token: a TLRUCache keeps an entry while ``now <``
    its expiry, and a token is still good at exactly ``valid_until``, hence the next float up."""
    return math.nextafter(claims.valid_until, math.inf)


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
        # Each token lives until its own valid_until; expired ones go first when the cache is
        # full, then the least recently used. Only the event loop's thread touches it: no lock.
        self._cache: TLRUCache[str, Claims] = TLRUCache(maxsize=CACHE_SIZE, ttu=_usable_until, timer=lambda: self.clock())

    async def verify(self, raw: str) -> Claims:
        """The token's claims; InvalidToken if it is not acceptable, KeysUnavailable if unknowable."""
        cached = self._cache.get(raw)
        if cached is not None:
            return cached
        claims = self._claims(await self._verified_payload(raw))
        self._cache[raw] = claims
        return claims

    async def _verified_payload(self, raw: str) -> dict[str, Any]:
        """The payload of a token one trusted key signed, its registered claims checked by pyjwt.
        Key selection and the header rules are ours; the claims are the library's."""
        if len(raw) > MAX_TOKEN_LENGTH or raw.count(".") != 2:
            raise InvalidToken("malformed token")
        try:
            header = jwt.get_unverified_header(raw)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"malformed token: {exc}") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS:
            raise InvalidToken(f"algorithm {alg!r} is not accepted")
        if "crit" in header or "b64" in header:
            raise InvalidToken("critical header extensions are not supported")
        if kid is None:
            # A claim refused by the library raises at once: the signature verified first.
            payloads = [p for key in self.bundle.values() if (p := self._signed(raw, alg, key, self.settings)) is not None]
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
        payload = self._signed(raw, alg, key, self.settings)
        if payload is None:
            raise InvalidToken(f"bad signature (key {kid!r}, {alg})")
        return payload

    @staticmethod
    def _signed(raw: str, alg: str, key: TrustedKey, settings: TokenAuthSettings) -> dict[str, Any] | None:
        """The payload if ``key`` verifies the signature (None if it does not) and pyjwt accepts
        the claims: ``exp``, ``iss`` and ``aud`` present, ``iss`` the issuer, ``aud`` naming this
        service, ``exp``/``nbf``/``iat`` within ``leeway`` of now, ``sub``/``jti`` strings if
        present. InvalidToken when the signature holds but a claim does not."""
        if not key.fits(alg):
            return None
        try:
            return _JWT.decode(
                raw,
                key.key,
                algorithms=[alg],
                options={"require": list(REQUIRED_CLAIMS)},
                audience=settings.service,
                issuer=settings.issuer,
                leeway=settings.leeway,
            )
        except (jwt.InvalidSignatureError, jwt.InvalidAlgorithmError, jwt.InvalidKeyError, ValueError, TypeError):
            return None
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(str(exc)) from None

    def _claims(self, data: dict[str, Any]) -> Claims:
        """Berth's own part: who the token names and what it grants. The verifier's clock (pyjwt
        reads the system's) bounds how long the token is taken, here and in the cache."""
        valid_until = int(data["exp"]) + self.settings.leeway  # pyjwt checked that exp is an integer
        if self.clock() > valid_until:
            raise InvalidToken("expired")
        subject = data.get("sub")  # pyjwt checked that it is a string if present
        return Claims(subject or None, _grants(data.get("access", [])), valid_until)


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
        credentials = basic_auth.parse_or_none(header)
        token = await self.rules.login(header.strip(), forwarded.client_address(request)) if credentials else None
        if token is None:
            user = credentials.username[:100] if credentials else ""
            log.info(
                "%s %s: Basic credentials refused by the token service%s",
                request.method,
                request.url.path,
                f" for {user!r}" if user else " (malformed)",
            )
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
