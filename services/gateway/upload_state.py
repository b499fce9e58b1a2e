"""Upload state in ``Location`` URLs, signed so a client cannot point an upload at another
repository or forge a session; any gateway replica with the same ``http.secret`` can check it.

The state also carries the digest algorithm the client announced when it started the upload
(``digest-algorithm``), so whichever blobstore takes the next chunk hashes it with that algorithm,
and, in the URL a POST answers with, when the session started: the gateway starts sessions without
asking the blobstore, which stores one only with its first bytes (services/blobstore/uploads.py),
and until then knows it only from this signed *fresh* mark.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

from services.common.errors import BLOB_UPLOAD_INVALID, RegistryError


@dataclass(frozen=True)
class UploadState:
    """What a genuine token says: the bytes received when it was issued, the announced algorithm
    (empty when the client announced none, as in every token before it was added), and when the
    session started if nothing of it was stored yet (0 otherwise)."""

    offset: int
    algorithm: str = ""
    fresh_since: int = 0


class UploadStateSigner:
    def __init__(self, secret: str) -> None:
        self._key = secret.encode() if secret else secrets.token_bytes(32)

    def pack(self, name: str, upload_id: str, offset: int, algorithm: str = "", fresh_since: int = 0) -> str:
        state: dict[str, str | int] = {"n": name, "u": upload_id, "o": offset}
        if algorithm:
            state["a"] = algorithm
        if fresh_since:
            state["f"] = fresh_since
        body = base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode())
        return f"{body.decode()}.{self._sign(body)}"

    def check(self, token: str | None, name: str, upload_id: str) -> UploadState:
        """The state in a genuine token for this upload; BLOB_UPLOAD_INVALID otherwise."""
        if not token or "." not in token or len(token) > 4096:
            raise RegistryError(BLOB_UPLOAD_INVALID, {"reason": "missing or malformed upload state"})
        body, _, signature = token.rpartition(".")
        # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500).
        if not hmac.compare_digest(signature.encode(), self._sign(body.encode()).encode()):
            raise RegistryError(BLOB_UPLOAD_INVALID, {"reason": "upload state signature mismatch"})
        try:
            state = json.loads(base64.urlsafe_b64decode(body.encode()))
            if state["n"] != name or state["u"] != upload_id:
                raise ValueError
            return UploadState(int(state["o"]), str(state.get("a", "")), int(state.get("f", 0)))
        except (ValueError, KeyError, TypeError):
            raise RegistryError(BLOB_UPLOAD_INVALID, {"reason": "upload state does not match this upload"}) from None

    def _sign(self, body: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self._key, body, hashlib.sha256).digest()).decode().rstrip("=")
