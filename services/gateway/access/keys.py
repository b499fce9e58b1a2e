"""The public keys tokens may be signed with: PEM files read at startup (rootcertbundle and the
classic registry's privileged_key) and/or a JWKS URL.

Bundle keys are known by their libtrust key ID (what registry:2 and its token servers put in
``kid``). JWKS keys are known by their ``kid``; the set is cached for ``jwks_ttl`` seconds and
fetched again early when a token names a kid it lacks, but never more often than once per
``jwks_refresh_interval`` seconds, so a flood of made-up kids cannot hammer the JWKS URL.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    load_pem_public_key,
)

from services.common.key_ids import libtrust_key_id

log = logging.getLogger("berth.gateway.access")

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey

# Asymmetric signatures only: never "none", never HMAC (whose "key" would be a public key).
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.+?-----END \1-----", re.S)
FETCH_TIMEOUT = 5.0


class KeysUnavailable(Exception):
    """The JWKS could not be fetched, so a token's key can be neither found nor ruled out."""


@dataclass(frozen=True)
class TrustedKey:
    kid: str
    key: PublicKey
    alg: str | None = None  # the JWK's "alg", when it names one

    def fits(self, alg: str) -> bool:
        """Whether a token signed with ``alg`` may be checked with this key at all."""
        if self.alg is not None and self.alg != alg:
            return False
        if alg.startswith(("RS", "PS")):
            return isinstance(self.key, rsa.RSAPublicKey)
        if alg in _CURVES:
            return isinstance(self.key, ec.EllipticCurvePublicKey) and self.key.curve.name == _CURVES[alg]
        if alg == "EdDSA":
            return isinstance(self.key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey))
        return False


def _public(key: Any) -> PublicKey:
    if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        raise ValueError(f"unsupported key type {type(key).__name__}")
    return key


def load_bundle(path: str, setting: str = "auth.token.rootcertbundle") -> dict[str, TrustedKey]:
    """The certificates and public keys of a PEM file, by libtrust key ID; ValueError if none.

    ``setting`` names the key the path came from (rootcertbundle, privileged_key), so an operator
    told the file is unusable knows which setting to fix.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{setting}: cannot read {path!r}: {exc.strerror}") from None
    keys: dict[str, TrustedKey] = {}
    for match in _PEM.finditer(data):
        label = match.group(1).decode()
        try:
            if label == "CERTIFICATE":
                key = _public(x509.load_pem_x509_certificate(match.group(0)).public_key())
            elif label in ("PUBLIC KEY", "RSA PUBLIC KEY"):
                key = _public(load_pem_public_key(match.group(0)))
            else:
                log.warning("%s %s: skipping a %s block (only certificates and public keys)", setting, path, label)
                continue
        except ValueError as exc:
            raise ValueError(f"{setting} {path!r}: bad {label}: {exc}") from None
        kid = libtrust_key_id(key)
        keys[kid] = TrustedKey(kid, key)
    if not keys:
        raise ValueError(f"{setting} {path!r}: no certificates or public keys in it")
    return keys


def parse_jwks(document: Any) -> dict[str, TrustedKey]:
    """The usable signature keys of a JWKS document; ValueError if it is not one."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document (no 'keys' list)")
    keys: dict[str, TrustedKey] = {}
    for entry in document["keys"]:
        key = _parse_jwk(entry)
        if key is not None:
            keys[key.kid] = key
    return keys


def _parse_jwk(entry: Any) -> TrustedKey | None:
    if not isinstance(entry, dict):
        return None
    kid, alg = entry.get("kid"), entry.get("alg")
    if not isinstance(kid, str) or not kid or entry.get("kty") not in ("RSA", "EC", "OKP"):
        return None  # no kid to find it by, or a symmetric key: never trusted
    if entry.get("use", "sig") != "sig" or (alg is not None and alg not in ALGORITHMS):
        return None
    try:
        key = jwt.PyJWK(entry).key
        if hasattr(key, "public_key"):  # a private JWK published by mistake: use its public half
            key = key.public_key()
        return TrustedKey(kid, _public(key), alg)
    except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
        log.warning("JWKS key %r skipped: %s", kid, exc)
        return None


class JWKSKeys:
    """The keys published at a JWKS URL, cached, fetched again on expiry or an unknown kid."""

    def __init__(self, url: str, ttl: float, refresh_interval: float) -> None:
        self.url = url
        self.ttl = ttl
        self.refresh_interval = refresh_interval
        self._keys: dict[str, TrustedKey] = {}
        self._loaded_at: float | None = None  # monotonic time of the last good fetch
        self._attempted_at: float | None = None  # ... of the last fetch, good or not
        self._failed = False
        self._lock = asyncio.Lock()
        self._client: httpx.AsyncClient | None = None
        self.fetches = 0

    async def get(self, kid: str) -> TrustedKey | None:
        """The key named ``kid``; None if the JWKS (fetched again if allowed) lacks it.

        Raises KeysUnavailable when the JWKS could not be fetched and does not hold the kid.
        """
        stale = self._loaded_at is None or time.monotonic() - self._loaded_at >= self.ttl
        if stale:
            await self._refresh()
        key = self._keys.get(kid)
        if key is None and not stale and self._may_fetch(time.monotonic()):
            await self._refresh()
            key = self._keys.get(kid)
        if key is None and self._failed:
            raise KeysUnavailable(f"JWKS {self.url} could not be fetched")
        return key

    def _may_fetch(self, now: float) -> bool:
        return self._attempted_at is None or now - self._attempted_at >= self.refresh_interval

    async def _refresh(self) -> None:
        waited_since = time.monotonic()
        async with self._lock:
            # Whoever held the lock may have just fetched; one fetch serves every waiter.
            if self._attempted_at is not None and self._attempted_at >= waited_since:
                return
            if not self._may_fetch(time.monotonic()):
                return
            self._attempted_at = time.monotonic()
            self.fetches += 1
            try:
                keys = await self._fetch()
            except (httpx.HTTPError, ValueError) as exc:
                self._failed = True
                log.warning("JWKS %s: fetch failed, keeping %d known keys: %s", self.url, len(self._keys), exc)
                return
            self._keys, self._loaded_at, self._failed = keys, self._attempted_at, False
            log.info("JWKS %s: %d keys", self.url, len(keys))

    async def _fetch(self) -> dict[str, TrustedKey]:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=FETCH_TIMEOUT, follow_redirects=True)
        response = await self._client.get(self.url, headers={"Accept": "application/json"})
        response.raise_for_status()
        return parse_jwks(response.json())

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
