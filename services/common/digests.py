"""Content digests: the grammar, the supported algorithms, and incremental hashing.

A digest is ``algorithm:encoded``. Only sha256 and sha512 are accepted for content; anything else
that is well-formed is ``UNSUPPORTED``-algorithm and reported as ``DIGEST_INVALID`` to clients.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from services.common.errors import DIGEST_INVALID, RegistryError

# The OCI image-spec digest grammar.
_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")

ALGORITHMS: dict[str, int] = {"sha256": 64, "sha512": 128}  # name -> hex length
CANONICAL = "sha256"


@dataclass(frozen=True)
class Digest:
    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def parse(value: str) -> Digest:
    """Parses and checks a digest; raises DIGEST_INVALID naming what is wrong."""
    if not value or len(value) > 256 or not _DIGEST_RE.fullmatch(value):
        raise RegistryError(DIGEST_INVALID, {"digest": value[:300], "reason": "malformed digest"})
    algorithm, encoded = value.split(":", 1)
    expected_len = ALGORITHMS.get(algorithm)
    if expected_len is None:
        raise RegistryError(DIGEST_INVALID, {"digest": value, "reason": f"unsupported algorithm {algorithm!r}"})
    if len(encoded) != expected_len or not re.fullmatch(r"[a-f0-9]+", encoded):
        raise RegistryError(DIGEST_INVALID, {"digest": value, "reason": "malformed encoded part"})
    return Digest(algorithm, encoded)


def is_digest(reference: str) -> bool:
    """True when a manifest reference is meant as a digest (contains ':'), false for a tag."""
    return ":" in reference


def check_algorithm(algorithm: str) -> str:
    """An algorithm content may be hashed with (a client's ``digest-algorithm``); DIGEST_INVALID
    otherwise, so an unknown name is refused before any byte is taken, not at commit."""
    if algorithm not in ALGORITHMS:
        reason = f"unsupported algorithm, use one of {', '.join(ALGORITHMS)}"
        raise RegistryError(DIGEST_INVALID, {"algorithm": algorithm[:100], "reason": reason})
    return algorithm


def hasher(algorithm: str) -> hashlib._Hash:
    """A running hash; only for supported algorithms (hashlib knows others, such as md5)."""
    return hashlib.new(check_algorithm(algorithm))


def of(data: bytes, algorithm: str = CANONICAL) -> str:
    """The digest string of some bytes."""
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
