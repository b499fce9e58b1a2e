"""Refresh tokens: opaque, random, stored only as their sha256, bound to one account and service.

A refresh token lets a client (``docker login`` keeps it as the identity token) get new access
tokens without sending the password again. The database row says whose it is, for which service,
until when, and whether it was revoked; the token itself (256 random bits, so a plain sha256 is
as good as a slow hash) never touches the disk or the logs.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, delete, insert, select, update

from services.auth.database import refresh_tokens

# Anything longer cannot be one of ours and is not even hashed.
MAX_LENGTH = 256


@dataclass(frozen=True)
class RefreshGrant:
    """What a valid refresh token stands for."""

    account: str
    service: str


class RefreshTokens:
    def __init__(self, engine: Engine, ttl: int, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.ttl = ttl
        self.clock = clock

    def create(self, account: str, service: str, client_id: str) -> str:
        token = secrets.token_urlsafe(32)
        now = int(self.clock())
        with self.engine.begin() as conn:
            conn.execute(
                insert(refresh_tokens).values(
                    token_hash=_digest(token),
                    account=account,
                    service=service,
                    client_id=client_id[:128],
                    created_at=now,
                    expires_at=now + self.ttl,
                    revoked=False,
                )
            )
        return token

    def lookup(self, token: str) -> RefreshGrant | None:
        """The grant of a live token; None for unknown, expired or revoked ones (all alike)."""
        if not token or len(token) > MAX_LENGTH:
            return None
        query = select(refresh_tokens.c.account, refresh_tokens.c.service, refresh_tokens.c.expires_at, refresh_tokens.c.revoked).where(
            refresh_tokens.c.token_hash == _digest(token)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None or row.revoked or row.expires_at <= self.clock():
            return None
        return RefreshGrant(row.account, row.service)

    def revoke(self, token: str, account: str) -> bool:
        """Revokes ``account``'s own token; False (and nothing changes) for anyone else's or none."""
        if not token or len(token) > MAX_LENGTH:
            return False
        statement = (
            update(refresh_tokens)
            .where(refresh_tokens.c.token_hash == _digest(token), refresh_tokens.c.account == account)
            .values(revoked=True)
        )
        with self.engine.begin() as conn:
            return conn.execute(statement).rowcount > 0

    def purge_expired(self) -> int:
        """Deletes rows that expired a day ago or more (kept a while, for audits); returns how many."""
        cutoff = int(self.clock()) - 86400
        with self.engine.begin() as conn:
            return conn.execute(delete(refresh_tokens).where(refresh_tokens.c.expires_at < cutoff)).rowcount


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()
