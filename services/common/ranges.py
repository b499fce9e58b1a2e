"""``Range`` (blob reads, RFC 9110) and ``Content-Range`` (chunked uploads, OCI) headers."""

from __future__ import annotations

import re

from services.common.errors import BLOB_UPLOAD_INVALID, RANGE_INVALID, RegistryError

_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")
_CONTENT_RANGE_RE = re.compile(r"(?:bytes[ =])?(\d+)-(\d+)")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The (offset, length) a ``Range`` header asks for, or None to send the whole blob.

    A range that is malformed (another unit, end before start, no numbers) or that the blob cannot
    satisfy raises RANGE_INVALID (416 with ``Content-Range: bytes */size``), so a client never takes
    the whole blob for the part it asked for. Several ranges at once are ignored (the whole blob),
    as RFC 9110 allows.
    """
    if not header:
        return None
    value = header.strip()
    if value.lower().startswith("bytes=") and "," in value:
        return None
    m = _RANGE_RE.fullmatch(value)
    if not m or (not m.group(1) and not m.group(2)):
        raise _unsatisfiable(size)
    first, last = m.group(1), m.group(2)
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0:
            raise _unsatisfiable(size)
        n = min(n, size)
        return size - n, n
    start = int(first)
    if (last and int(last) < start) or start >= size:
        raise _unsatisfiable(size)
    end = size - 1 if not last else min(int(last), size - 1)
    return start, end - start + 1


def _unsatisfiable(size: int) -> RegistryError:
    return RegistryError(RANGE_INVALID, {"size": size}, headers={"Content-Range": f"bytes */{size}"})


def parse_content_range(header: str | None) -> tuple[int, int] | None:
    """(start, end) inclusive of a chunk's ``Content-Range``; None when absent."""
    if header is None:
        return None
    m = _CONTENT_RANGE_RE.fullmatch(header.strip())
    if not m:
        raise RegistryError(BLOB_UPLOAD_INVALID, {"reason": "malformed Content-Range", "value": header[:100]})
    start, end = int(m.group(1)), int(m.group(2))
    if end < start:
        raise RegistryError(RANGE_INVALID, {"reason": "Content-Range ends before it starts"})
    return start, end
