"""The token service's decisions, apart from HTTP: who is asking, and what they get.

Built once per process from ``token_service`` settings; a setting that cannot be used (a key of the
wrong type, a broken rules file, an unreachable database) is a ConfigError at startup, not a
failure at the first request.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from services.auth import database, keys, passwords, ratelimit, users
from services.auth.challenges import too_many_requests, unauthorized
from services.auth.ratelimit import login_keys
from services.auth.refresh_tokens import RefreshTokens
from services.auth.rules import RuleFile, RulesError
from services.auth.scopes import Scope
from services.auth.tokens import IssuedToken, TokenIssuer
from services.common.config import ConfigError, RedisSettings, TokenServiceSettings
from services.common.errors import (
    MISSING_REQUIRED_FIELD,
    UNSUPPORTED_VALUE,
    RegistryError,
)
from services.common.metrics import TOKEN_DENIALS

log = logging.getLogger("berth.auth")


@dataclass(frozen=True)
class Grant:
    """An issued access token and the scopes it carries."""

    token: IssuedToken
    access: list[Scope]


class TokenService:
    def __init__(self, settings: TokenServiceSettings, shared: RedisSettings | None = None) -> None:
        """``shared``: the ``cache`` section; when it names a Redis, replicas share failed-login counts."""
        self.settings = settings
        self.keys = keys.load(settings)
        try:
            self.rules = RuleFile(settings.rules)
        except RulesError as exc:
            raise ConfigError(f"token_service.rules: {exc}") from None
        self.engine = database.connect(settings.database)
        self.users = users.open_store(self.engine, settings.htpasswd)
        self.refresh_tokens = RefreshTokens(self.engine, settings.refresh_ttl)
        self.refresh_tokens.purge_expired()
        self.issuer = TokenIssuer(self.keys, settings.issuer, settings.token_ttl, settings.services)
        self.limiter = ratelimit.create(settings.rate_limit, shared)
        self.realm = settings.issuer
        passwords.warm_up()
        log.info(
            "token service: issuer %r, services %s, key %s (%s, kid %s), %d trusted keys",
            settings.issuer,
            ", ".join(settings.services),
            self.keys.signing.path,
            self.keys.signing.public.alg,
            self.keys.signing.public.kid,
            len(self.keys.trusted),
        )

    def check_service(self, service: str) -> str:
        if not service:
            raise RegistryError(MISSING_REQUIRED_FIELD, "missing service value")
        if service not in self.settings.services:
            raise RegistryError(UNSUPPORTED_VALUE, f"unknown service {service[:100]!r}")
        return service

    def authenticate(self, username: str, password: str, address: str | None) -> str:
        """The account if the password is right; 429 while blocked, 401 otherwise (same for unknown names)."""
        counters = login_keys(username, address)
        wait = self.limiter.retry_after(counters)
        if wait is not None:
            log.warning("login for %r from %s refused: too many failures (retry in %ds)", username[:64], address, wait)
            TOKEN_DENIALS.labels("rate_limited").inc()
            raise too_many_requests(wait)
        if self.users.verify(username, password):
            return username
        self.limiter.record_failure(counters)
        log.info("failed login for %r from %s", username[:64], address)
        TOKEN_DENIALS.labels("bad_credentials").inc()
        raise unauthorized("invalid username or password", self.realm)

    def redeem_refresh_token(self, token: str, service: str, address: str | None) -> str:
        """The account a live refresh token of ``service`` belongs to; 401 for any other token."""
        counters = login_keys(None, address)
        wait = self.limiter.retry_after(counters)
        if wait is not None:
            TOKEN_DENIALS.labels("rate_limited").inc()
            raise too_many_requests(wait)
        grant = self.refresh_tokens.lookup(token)
        if grant is None or grant.service != service or not self.users.exists(grant.account):
            self.limiter.record_failure(counters)
            log.info("refused a refresh token from %s (unknown, expired, revoked or not for %r)", address, service[:100])
            TOKEN_DENIALS.labels("invalid_refresh_token").inc()
            raise unauthorized("invalid refresh token", self.realm)
        return grant.account

    def grant(self, account: str, scopes: Sequence[Scope]) -> list[Scope]:
        """What the rules give ``account`` ("" for anonymous) of what it asked for."""
        groups = self.users.groups(account) if account else ()
        return self.rules.current().grant(account, groups, scopes)

    def issue(self, account: str, service: str, scopes: Sequence[Scope], client_id: str) -> Grant:
        access = self.grant(account, scopes)
        token = self.issuer.issue(account, service, access)
        log.info(
            "issued a token for %s to %r (client %r): %s",
            service,
            account or "<anonymous>",
            client_id[:64],
            " ".join(str(s) for s in access) or "no scopes",
        )
        return Grant(token, access)
