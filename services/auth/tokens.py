"""Access tokens: JWTs as docs/spec/auth/jwt.md describes them, signed and verified here.

Header ``typ``/``alg``/``kid`` (the libtrust key ID); claims ``iss``, ``sub`` (the account, "" for
anonymous), ``aud`` (the requested service, a single string as registry 2.8 expects), ``exp``,
``nbf``, ``iat``, ``jti`` and ``access``. Verification (for ``/authorize``) accepts only this
service's own keys, each with the one algorithm of its key type (no ``none``, no HMAC confusion).
"""

from __future__ import annotations

import datetime
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from services.auth.keys import KeySet
from services.auth.scopes import Scope

# Tokens longer than this are not parsed (ours are well under 4 KiB even with 64 scopes).
MAX_TOKEN_LENGTH = 16 * 1024
# Clock difference tolerated when verifying; the tokens are our own, so it only covers replicas.
LEEWAY = 30


class InvalidToken(Exception):
    """A token this service did not issue, or that is no longer valid (the message says why)."""


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int
    issued_at: int  # epoch seconds

    @property
    def issued_at_rfc3339(self) -> str:
        return datetime.datetime.fromtimestamp(self.issued_at, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class VerifiedToken:
    account: str  # "" for anonymous
    audience: str
    claims: dict[str, Any]


class TokenIssuer:
    def __init__(
        self,
        keys: KeySet,
        issuer: str,
        ttl: int,
        audiences: Sequence[str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.ttl = ttl
        self.audiences = list(audiences)
        self.clock = clock

    def issue(self, account: str, audience: str, access: Sequence[Scope]) -> IssuedToken:
        now = int(self.clock())
        claims = {
            "iss": self.issuer,
            "sub": account,
            "aud": audience,
            "exp": now + self.ttl,
            "nbf": now,
            "iat": now,
            "jti": secrets.token_urlsafe(18),
            "access": [scope.as_claim() for scope in access],
        }
        signing = self.keys.signing
        token = jwt.encode(claims, signing.private, algorithm=signing.public.alg, headers={"typ": "JWT", "kid": signing.public.kid})
        return IssuedToken(token, self.ttl, now)

    def verify(self, raw: str) -> VerifiedToken:
        """The token's account and claims; InvalidToken unless signed by one of our keys and valid now."""
        if len(raw) > MAX_TOKEN_LENGTH or raw.count(".") != 2:
            raise InvalidToken("malformed token")
        try:
            header = jwt.get_unverified_header(raw)
        except jwt.PyJWTError:
            raise InvalidToken("malformed token") from None
        kid = header.get("kid")
        key = self.keys.trusted.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidToken("not signed by a key of this service")
        if header.get("alg") != key.alg:
            raise InvalidToken(f"algorithm {str(header.get('alg'))[:20]!r} does not fit the key")
        try:
            claims = jwt.decode(
                raw,
                key.key,
                algorithms=[key.alg],
                issuer=self.issuer,
                audience=self.audiences,
                leeway=LEEWAY,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("expired") from None
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise InvalidToken(f"invalid token: {exc.__class__.__name__}") from None
        account, audience = claims.get("sub"), claims.get("aud")
        if not isinstance(account, str) or not isinstance(audience, str):
            raise InvalidToken("sub and aud must be strings")
        return VerifiedToken(account, audience, claims)
