"""Process-wide memory settings.

glibc gives every thread that allocates its own malloc arena (up to 8 per core) and keeps what was
freed in each: a blobstore whose worker threads each relayed some 1 MiB chunks holds tens of MiB
it no longer uses. Two arenas are plenty for services whose threads mostly wait on I/O.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_ARENA_MAX = -8  # glibc's mallopt parameter


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Caps glibc's malloc arenas (as MALLOC_ARENA_MAX does), unless the environment already set
    it; False where there is no glibc (musl, macOS)."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False
