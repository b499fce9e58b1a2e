"""What the registry benchmark pushes: a large pseudo-random blob produced piece by piece, and small
complete OCI images built before any timing starts, so generating content never shows in a figure.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

MiB = 1 << 20
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCTET = "application/octet-stream"
# Pieces the large-blob generator yields; small enough to keep memory flat,
# large enough that per-piece Python overhead is negligible.
PIECE = 1 * MiB
# Every piece starts at a different offset into the random pool, so the
# blob is not one block repeated (a registry must not get a free ride from
# compression or dedup below blob level).
POOL_SLACK = 64 * 1024


def sha256_digest(data: bytes) -> str:
    """OCI digest string of a byte string."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


class RandomBlob:
    """Pseudo-random content of any size from a ~1 MiB random pool.

    Why: generating 256 MiB with os.urandom while timing would measure the
    client's RNG, and holding it in memory defeats "bounded memory".  Piece k
    is the pool read from a k-dependent offset, so content can be produced
    again (for the digest pre-pass) without storing it.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._pool = os.urandom(PIECE + POOL_SLACK)
        self._digest: str | None = None

    def _offset(self, piece: int) -> int:
        return (piece * 7919) % POOL_SLACK

    def pieces(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Bytes [start, end) of the blob, yielded at most PIECE at a time."""
        end = self.size if end is None else end
        pos = start
        while pos < end:
            k, within = divmod(pos, PIECE)
            n = min(PIECE - within, end - pos)
            off = self._offset(k) + within
            yield self._pool[off : off + n]
            pos += n

    @property
    def digest(self) -> str:
        """sha256 of the whole blob, computed once outside any timing."""
        if self._digest is None:
            h = hashlib.sha256()
            for part in self.pieces():
                h.update(part)
            self._digest = "sha256:" + h.hexdigest()
        return self._digest


@dataclass(frozen=True)
class SmallImage:
    """A complete tiny image, built before timing starts."""

    tag: str
    config: bytes
    layer: bytes
    manifest: bytes

    @property
    def blobs(self) -> tuple[bytes, bytes]:
        return (self.config, self.layer)


def make_small_image(tag: str, run_id: str, layer_size: int) -> SmallImage:
    """Config + one random layer + OCI manifest; random so no two images
    (or runs) share blobs, which would let a registry skip work."""
    layer = os.urandom(layer_size)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"bench.run": run_id, "bench.tag": tag}},
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer)]},
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": sha256_digest(layer), "size": len(layer)}],
        },
        sort_keys=True,
    ).encode()
    return SmallImage(tag=tag, config=config, layer=layer, manifest=manifest)
