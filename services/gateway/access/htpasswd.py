"""Basic auth against an htpasswd file of bcrypt hashes (``htpasswd -B``), as registry:2 does it.

Valid credentials grant everything. The file is read again whenever it changes (mtime, size or
inode), so accounts can be added without a restart. A bcrypt check costs tens of milliseconds of
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
import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path

import bcrypt
from starlette.requests import Request

from services.common.config import HtpasswdAuthSettings
from services.common.errors import UNAUTHORIZED
from services.common.metrics import ACCESS_DENIED
from services.gateway.access.model import (
    Access,
    Challenge,
    Identity,
    Reach,
    parse_basic,
    quote,
)

__all__ = ["HtpasswdAccessController", "HtpasswdFile", "parse_basic"]

log = logging.getLogger("berth.gateway.access")

SUCCESS_TTL = 30.0
CACHE_SIZE = 1024
# Checked for unknown users too, so the answer takes as long whether or not the account exists.
_DUMMY_HASH = b"$2b$10$qD8a2C2tZ3YyExpCIwAdsuQWo1d2vn.DN7Yt4m32Tky5Xvr5q4HfS"
_BCRYPT_PREFIXES = (b"$2a$", b"$2b$", b"$2y$")
_NO_CREDENTIALS = ACCESS_DENIED.labels("no_credentials")
_BAD_CREDENTIALS = ACCESS_DENIED.labels("bad_credentials")


class HtpasswdFile:
    """The accounts of an htpasswd file, read again when the file changes."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._signature: tuple[int, int, int] | None = None
        self._loaded = False
        self._users: dict[str, bytes] = {}

    def users(self) -> dict[str, bytes]:
        try:
            st = os.stat(self.path)
            signature: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            signature = None
        if self._loaded and signature == self._signature:
            return self._users
        self._loaded, self._signature, self._users = True, signature, {}
        try:
            self._users = self._parse(self.path.read_bytes())
            log.info("htpasswd %s: %d accounts", self.path, len(self._users))
        except OSError as exc:
            log.warning("htpasswd %s: %s; no account can log in", self.path, exc.strerror)
        return self._users

    def _parse(self, data: bytes) -> dict[str, bytes]:
        users: dict[str, bytes] = {}
        for number, line in enumerate(data.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith(b"#"):
                continue
            user, sep, hashed = line.partition(b":")
            if not sep or not user or not hashed.startswith(_BCRYPT_PREFIXES):
                log.warning("htpasswd %s line %d: not user:bcrypt-hash, skipped", self.path, number)
                continue
            users[user.decode("utf-8", "replace")] = hashed
        return users


class HtpasswdAccessController:
    """registry:2's htpasswd access controller: any valid account may do anything."""

    def __init__(self, settings: HtpasswdAuthSettings) -> None:
        self.settings = settings
        self.file = HtpasswdFile(settings.path)
        self._pepper = secrets.token_bytes(32)
        self._good: dict[tuple[str, bytes, bytes], float] = {}
        self._running: dict[tuple[str, bytes, bytes], asyncio.Future[bool]] = {}
        self.bcrypt_checks = 0

    async def authorized(self, request: Request, needed: Sequence[Access], *, basic: bool = False) -> Identity:
        credentials = parse_basic(request.headers.get("authorization", ""))
        if credentials is None or not await self.check(*credentials):
            if credentials is not None:
                log.info("%s %s: bad credentials for %r", request.method, request.url.path, credentials[0][:100])
            (_NO_CREDENTIALS if credentials is None else _BAD_CREDENTIALS).inc()
            raise Challenge(UNAUTHORIZED, f"Basic realm={quote(self.settings.realm)}", needed)
        return Identity(account=credentials[0])

    async def check(self, user: str, password: str) -> bool:
        secret = password.encode("utf-8")
        hashed = self.file.users().get(user)
        if hashed is None or len(secret) > 72:  # bcrypt reads 72 bytes; longer cannot be what was set
            await self._bcrypt(secret[:72], _DUMMY_HASH)
            return False
        key = (user, hashed, hmac.new(self._pepper, secret, hashlib.sha256).digest())
        now = time.monotonic()
        until = self._good.get(key)
        if until is not None and now < until:
            return True
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(self._bcrypt(secret, hashed))
            self._running[key] = running
            running.add_done_callback(lambda _: self._running.pop(key, None))
        ok = await asyncio.shield(running)
        if ok:
            self._remember(key, time.monotonic() + SUCCESS_TTL)
        return ok

    def _remember(self, key: tuple[str, bytes, bytes], until: float) -> None:
        if len(self._good) >= CACHE_SIZE:
            now = time.monotonic()
            for stale in [k for k, t in self._good.items() if t <= now]:
                del self._good[stale]
            if len(self._good) >= CACHE_SIZE:
                self._good.clear()
        self._good[key] = until

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
