"""Basic auth against an htpasswd file of bcrypt hashes (``htpasswd -B``), as registry:2 does it.

Valid credentials grant everything. The file is ``services.common.htpasswd``'s to read (the token
service's reader too): again whenever it changes, so accounts can be added without a restart, and
the header is ``services.common.basic_auth``'s to parse. A bcrypt check costs tens of milliseconds of
CPU: it runs in a thread, concurrent checks of the same credentials share one run, and a success
is remembered for ``SUCCESS_TTL`` seconds under (user, the file's hash, a keyed digest of the
password), so a push of 50 requests costs one check and a changed password is never served from
the cache. The password itself is never kept.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from collections.abc import Sequence

import bcrypt
from cachetools import TTLCache
from starlette.requests import Request

from services.common import basic_auth
from services.common.config import HtpasswdAuthSettings
from services.common.errors import UNAUTHORIZED
from services.common.htpasswd import HtpasswdFile
from services.common.metrics import ACCESS_DENIED
from services.gateway.access.model import Access, Challenge, Identity, Reach, quote

__all__ = ["HtpasswdAccessController"]

log = logging.getLogger("berth.gateway.access")

SUCCESS_TTL = 30.0
CACHE_SIZE = 1024
# Checked for unknown users too, so the answer takes as long whether or not the account exists.
_DUMMY_HASH = b"$2b$10$qD8a2C2tZ3YyExpCIwAdsuQWo1d2vn.DN7Yt4m32Tky5Xvr5q4HfS"
_NO_CREDENTIALS = ACCESS_DENIED.labels("no_credentials")
_BAD_CREDENTIALS = ACCESS_DENIED.labels("bad_credentials")


class HtpasswdAccessController:
    """registry:2's htpasswd access controller: any valid account may do anything."""

    def __init__(self, settings: HtpasswdAuthSettings) -> None:
        self.settings = settings
        self.file = HtpasswdFile(settings.path)
        self._pepper = secrets.token_bytes(32)
        # Accounts whose password checked out lately: bcrypt costs tens of ms, a pull makes dozens
        # of requests. Keyed by the stored hash too, so a changed password is checked again.
        self._good: TTLCache[tuple[str, bytes, bytes], bool] = TTLCache(maxsize=CACHE_SIZE, ttl=SUCCESS_TTL)
        self._running: dict[tuple[str, bytes, bytes], asyncio.Future[bool]] = {}
        self.bcrypt_checks = 0

    async def authorized(self, request: Request, needed: Sequence[Access], *, basic: bool = False) -> Identity:
        credentials = basic_auth.parse_or_none(request.headers.get("authorization"))
        if credentials is None or not await self.check(credentials.username, credentials.password):
            if credentials is not None:
                log.info("%s %s: bad credentials for %r", request.method, request.url.path, credentials.username[:100])
            (_NO_CREDENTIALS if credentials is None else _BAD_CREDENTIALS).inc()
            raise Challenge(UNAUTHORIZED, f"Basic realm={quote(self.settings.realm)}", needed)
        return Identity(account=credentials.username)

    async def check(self, user: str, password: str) -> bool:
        secret = password.encode("utf-8")
        stored = self.file.hash_of(user)
        hashed = stored.encode() if stored is not None else None
        if hashed is None or len(secret) > 72:  # bcrypt reads 72 bytes; longer cannot be what was set
            await self._bcrypt(secret[:72], _DUMMY_HASH)
            return False
        key = (user, hashed, hmac.new(self._pepper, secret, hashlib.sha256).digest())
        if key in self._good:
            return True
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(self._bcrypt(secret, hashed))
            self._running[key] = running
            running.add_done_callback(lambda _: self._running.pop(key, None))
        ok = await asyncio.shield(running)
        if ok:
            self._good[key] = True  # the event loop is this cache's only user: no lock
        return ok

    async def _bcrypt(self, password: bytes, hashed: bytes) -> bool:
        self.bcrypt_checks += 1
        try:
            return await asyncio.to_thread(bcrypt.checkpw, password, hashed)
        except ValueError as exc:  # a damaged hash in the file
            log.warning("htpasswd %s: cannot check a hash: %s", self.settings.path, exc)
            return False

    def reach(self, identity: Identity) -> Reach:
        # htpasswd has no rules: a signed-in user may pull everything, anonymous nothing.
        return "all" if identity.account else "none"

    async def pullable(self, identity: Identity, names: Sequence[str]) -> set[str]:
        return set(names) if identity.account else set()

    async def aclose(self) -> None:
        return None
