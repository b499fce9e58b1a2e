"""Signed, short-lived URLs for blob reads the blobstore serves itself (``blobstore.public_url``).

The filesystem's answer to S3's presigned URLs: the gateway checks who may pull, then redirects
the client here, and the blobstore's HTTP listener sends the file with ``sendfile`` — no blob byte
crosses gRPC or Python. A URL names the repository as well as the digest, and the listener checks
the repository's link on every request, so a blob deleted from the repository stops being served
at once, not when the URL expires.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from urllib.parse import quote

from services.common.config import Settings

# Small blobs are streamed through the gateway: a redirect's second round trip costs more than
# the copy it saves.
MIN_REDIRECT_SIZE = 1 << 20
PATH_PREFIX = "/blobs/"


def signing_key(settings: Settings) -> bytes:
    """Every replica behind one public_url must verify what any of them signed, so the key comes
    from a secret they share; without one, a per-process key (a single blobstore)."""
    shared = settings.blobstore.token or settings.http.secret
    if not shared:
        return secrets.token_bytes(32)
    return hmac.new(shared.encode(), b"berth blob url v1", hashlib.sha256).digest()


class BlobURLSigner:
    def __init__(self, base_url: str, key: bytes, expiry: int) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = key
        self.expiry = expiry

    def _signature(self, repository: str, digest: str, expires: int) -> str:
        message = f"{repository}\n{digest}\n{expires}".encode()
        mac = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def url(self, repository: str, digest: str, now: float | None = None) -> str:
        expires = int(now if now is not None else time.time()) + self.expiry
        signature = self._signature(repository, digest, expires)
        return f"{self.base_url}{PATH_PREFIX}{quote(repository)}/{digest}?expires={expires}&signature={signature}"

    def valid(self, repository: str, digest: str, expires: str, signature: str, now: float | None = None) -> bool:
        """Whether the URL was signed here for this blob and has not expired."""
        if not expires.isdigit() or len(expires) > 12 or int(expires) < (now if now is not None else time.time()):
            return False
        expected = self._signature(repository, digest, int(expires))
        return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))
