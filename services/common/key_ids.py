"""The libtrust key ID: how registry:2 (and so the token service and the gateway) name a key."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def libtrust_key_id(key: Any) -> str:
    """sha256 of the DER SubjectPublicKeyInfo, first 240 bits, base32, in colon-joined fours.

    registry 2.8 looks token verification keys up by exactly this string (the ``kid`` header).
    """
    der = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))
